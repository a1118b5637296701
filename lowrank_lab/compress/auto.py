"""Automatic rank allocation: ranks placed where the calibration loss is least hurt, with its explanation.

1. Every whitened component of every linear matrix is priced by what dropping it costs the
   calibration loss: cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)² (:mod:`lowrank_lab.compress.costs`, one
   backward pass taken block by block; cached per model content and calibration).
2. A Lagrangian over all matrices: for a price λ per parameter, each matrix takes the option
   (a rank r below break-even, or dense) minimising Σ_{i>r} cᵢ + λ · params(r); λ is bisected
   until the parameters fit the budget.
3. The candidate plans (the uniform plan among them) are compressed and scored by their loss
   on calibration blocks; the best is returned, so ``auto`` never does worse than ``uniform``
   on the calibration text it is scored on. The evaluation split is never read.
   :func:`auto_allocation` returns the candidates with their scores (an
   :class:`~lowrank_lab.compress.results.AllocationReport`), so a page can say why.
"""

from __future__ import annotations

import numpy as np
import torch

from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.apply import score_plans
from lowrank_lab.compress.calibration import CALIBRATION_CACHE, CalibrationSettings, calibration_blocks, calibration_key
from lowrank_lab.compress.costs import LayerCosts, streamed_costs, streamed_spectra
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.results import AllocationReport, Candidate, plan_linear_params
from lowrank_lab.compress.sources import MemorySource
from lowrank_lab.compress.walk import batches_of, prepared_skeleton
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.models import LoadedModel
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn, report

SCORE_BLOCKS = 8  # calibration blocks each candidate plan is scored on
GRADIENT_BATCH = 4  # calibration blocks per forward/backward of one block in the cost pass


def lagrangian_plan(matrices: list[WeightMatrix], costs: dict[str, np.ndarray], keep: float) -> RankPlan:
    """The plan minimising Σ (cost of dropped components) with at most ``keep`` of the parameters.

    Args:
        matrices: the linear matrices.
        costs: name → cost of dropping each component (k,), in decomposition order.
        keep: fraction of the matrices' parameters to keep.

    Returns:
        A plan over the matrices worth factorizing; the others stay dense.
    """
    budget = keep * sum(m.params for m in matrices)
    options = []  # per matrix: (params (R+1,), loss (R+1,)) over ranks 1..R and dense last
    for m in matrices:
        out_in = sum(m.shape)
        top = (m.params - 1) // out_in  # largest rank with r·(m+n) < m·n
        tail = np.concatenate([np.cumsum(costs[m.name][::-1])[::-1], [0.0]])  # tail[r] = Σ_{i≥r} cᵢ
        ranks = np.arange(1, top + 1)
        params = np.concatenate([ranks * out_in, [m.params]]).astype(np.float64)
        loss = np.concatenate([tail[np.minimum(ranks, len(tail) - 1)], [0.0]])
        options.append((params, loss))

    def choose(price: float) -> tuple[list[int], float]:
        picks = [int(np.argmin(loss + price * params)) for params, loss in options]
        return picks, sum(o[0][p] for o, p in zip(options, picks))

    scale = max(float(loss.max()) for _, loss in options) or 1.0
    lo, hi = 0.0, scale  # at price `hi` one parameter costs more than any loss: smallest ranks
    if choose(hi)[1] > budget:
        hi *= 1e6
    for _ in range(60):
        mid = (lo + hi) / 2
        if choose(mid)[1] > budget:
            lo = mid
        else:
            hi = mid
    picks, _ = choose(hi)
    ranks = {}
    for m, (params, _), p in zip(matrices, options, picks):
        if p < len(params) - 1:  # the last option is dense
            ranks[m.name] = p + 1
    return RankPlan(ranks)


def layer_costs(
    loaded: LoadedModel,
    settings: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, LayerCosts]:
    """Whitened spectrum and loss cost of every component of every linear matrix.

    Kept in ``cache`` (default: :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`).

    Raises:
        DataError: no tokenizer, or too little calibration text.
    """
    settings = settings or CalibrationSettings()
    ids = calibration_blocks(loaded, settings)

    def make():
        source = MemorySource(loaded)
        model, layout = prepared_skeleton(source, torch.device("cpu"))
        names = [m.name for m in linear_matrices(loaded)]
        return streamed_costs(model, layout, source, batches_of(ids, GRADIENT_BATCH), names, "cpu", progress)

    store = CALIBRATION_CACHE if cache is None else cache
    return store.get_or_compute(calibration_key(loaded, "layer costs", settings), make)


def component_costs(
    loaded: LoadedModel,
    settings: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, np.ndarray]:
    """Loss-weighted cost of dropping each whitened component of each linear matrix (cached).

    cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)², g_t the calibration loss's gradient at the layer's output.

    Returns:
        name → costs (k,) float64, in the order of the whitened singular values (descending σ).
    """
    return {name: c.cost for name, c in layer_costs(loaded, settings, progress, cache).items()}


def whitened_values(
    loaded: LoadedModel,
    settings: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, np.ndarray]:
    """Whitened singular values of every linear matrix, from a forward pass only (encoders too).

    When the loss costs of the same model and settings are in the cache already (``auto`` ran),
    their spectra are these values, and no pass runs.
    """
    settings = settings or CalibrationSettings()
    ids = calibration_blocks(loaded, settings)
    store = CALIBRATION_CACHE if cache is None else cache

    def make():
        costs = store.get(calibration_key(loaded, "layer costs", settings))
        if costs is not None:
            return {name: c.sigma for name, c in costs.items()}
        source = MemorySource(loaded)
        model, layout = prepared_skeleton(source, torch.device("cpu"))
        names = [m.name for m in linear_matrices(loaded)]
        return streamed_spectra(model, layout, source, batches_of(ids, GRADIENT_BATCH), names, "cpu", progress)

    return store.get_or_compute(calibration_key(loaded, "whitened values", settings), make)


def auto_allocation(
    loaded: LoadedModel,
    keep: float,
    method: str,
    settings: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> AllocationReport:
    """The ``auto`` allocation (see the module docstring), with its candidates and their scores.

    The loss-weighted Lagrangian plan and the uniform plan are each compressed with ``method``
    (on the dense model's activations: the cheap compression) and scored by their calibration
    loss on the first :data:`SCORE_BLOCKS` calibration blocks; the lower wins.

    Raises:
        DataError: no tokenizer, or too little calibration text.
    """
    matrices = linear_matrices(loaded)
    settings = settings or CalibrationSettings()
    costs = component_costs(loaded, settings, _within(progress, 0, 2)(0, 1, ""), cache)
    plans = {"loss-weighted": lagrangian_plan(matrices, costs, keep), "uniform": plan_keep_params(matrices, keep)}
    blocks = calibration_blocks(loaded, settings)[:SCORE_BLOCKS]  # (≤ SCORE_BLOCKS, seq_len)
    scorer = EngineSettings(sequential=False, anchored=False)
    # One walk compresses and scores every candidate: they share the dense activations and each
    # layer's decomposition, and each compressed block is scored and freed as it is made.
    step = _within(progress, 1, 2)(0, 1, f"compressing and scoring {len(plans)} candidates")
    losses = score_plans(loaded, list(plans.values()), blocks, method, settings, step, engine=scorer)
    candidates = [
        Candidate(name, plan, plan_linear_params(matrices, plan), loss)
        for (name, plan), loss in zip(plans.items(), losses)
    ]
    chosen = int(np.nanargmin([c.calibration_loss for c in candidates]))
    scoring = (
        f"mean next-token loss on {blocks.shape[0]} calibration blocks of {blocks.shape[1]} tokens, each plan "
        f"compressed with {method} on the dense model's activations"
    )
    return AllocationReport("auto", keep, tuple(candidates), chosen, scoring)


def _within(progress: ProgressFn | None, part: int, parts: int):
    """Progress of sub-steps mapped into ``part`` of ``parts`` equal shares (their messages prefixed)."""

    def scale(sub: int, subs: int, prefix: str) -> ProgressFn | None:
        if progress is None:
            return None

        def fn(done: int, total: int, message: str) -> None:
            share = (sub + (done / total if total else 0.0)) / subs
            text = f"{prefix}: {message}" if message and prefix else message or prefix
            report(progress, round(1000 * (part + share)), 1000 * parts, text)

        return fn

    return scale
