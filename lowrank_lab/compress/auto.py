"""Automatic rank allocation: ranks placed where the calibration loss is least hurt.

1. Whitened decompositions of every linear matrix (cached; σᵢ² is the output error of dropping
   component i on the calibration tokens).
2. One forward and backward pass on calibration text gives each component's loss weight
   (see :mod:`lowrank_lab.compress.sensitivity`): cost cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)².
3. A Lagrangian over all matrices: for a price λ per parameter, each matrix takes the option
   (a rank r below break-even, or dense) minimising Σ_{i>r} cᵢ + λ · params(r); λ is bisected
   until the parameters fit the budget.
4. The candidate plans (the uniform plan among them) are compressed and scored by their loss
   on calibration blocks; the best is returned, so ``auto`` never does worse than ``uniform``
   on the calibration text it is scored on. The evaluation split is never read.
   :func:`auto_allocation` returns the candidates with their scores (an
   :class:`~lowrank_lab.compress.results.AllocationReport`), so a page can say why.
"""

from __future__ import annotations

import numpy as np

from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.apply import compress
from lowrank_lab.compress.calibration import CALIBRATION_CACHE, CalibrationSettings, calibration_blocks, calibration_key
from lowrank_lab.compress.decompositions import linear_matrices, span, whitened_decompositions
from lowrank_lab.compress.results import AllocationReport, Candidate, plan_linear_params
from lowrank_lab.compress.sensitivity import calibration_loss, output_fisher
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.models import LoadedModel
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn, report

SCORE_BLOCKS = 8


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
        loss = np.concatenate([tail[ranks], [0.0]])
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


def component_costs(
    loaded: LoadedModel,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, np.ndarray]:
    """Loss-weighted cost of dropping each whitened component of each linear matrix.

    Kept in ``cache`` (default: :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`).
    """
    store = CALIBRATION_CACHE if cache is None else cache

    def make():
        decs = whitened_decompositions(loaded, settings, span(progress, 0.0, 0.6), store)
        blocks = calibration_blocks(loaded, settings)
        fisher = output_fisher(loaded.copy(), decs, blocks, progress=span(progress, 0.6, 1.0))
        return {name: d.s.double().numpy() ** 2 * fisher[name] for name, d in decs.items()}

    return store.get_or_compute(calibration_key(loaded, "costs", settings), make)


def auto_allocation(
    loaded: LoadedModel,
    keep: float,
    method: str,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> AllocationReport:
    """The ``auto`` allocation (see the module docstring), with its candidates and their scores.

    The costs always come from whitened decompositions (they are what the loss pays per
    parameter); the candidates are scored compressed with ``method``.

    Returns:
        The loss-weighted Lagrangian plan and the uniform plan, each with its loss on (up to)
        the first ``SCORE_BLOCKS`` calibration blocks once compressed with ``method``; the
        chosen one has the lower loss.
    """
    matrices = linear_matrices(loaded)
    costs = component_costs(loaded, settings, span(progress, 0.0, 0.7), cache)
    score = span(progress, 0.7, 1.0)
    plans = {"loss-weighted": lagrangian_plan(matrices, costs, keep), "uniform": plan_keep_params(matrices, keep)}
    blocks = calibration_blocks(loaded, settings)[:SCORE_BLOCKS]  # (≤ SCORE_BLOCKS, seq_len)
    candidates = []
    for i, (name, plan) in enumerate(plans.items()):
        step = f"scoring candidate {i + 1}/{len(plans)} ({name})"
        report(score, i, len(plans), step)
        scale = _within(score, i, len(plans))
        model = compress(loaded, plan, method, settings, progress=scale(0, 2, step), cache=cache).model
        loss = calibration_loss(model, blocks, progress=scale(1, 2, f"{step}: calibration loss"))
        del model
        candidates.append(Candidate(name, plan, plan_linear_params(matrices, plan), loss))
    scoring = (
        f"mean next-token loss on {blocks.shape[0]} calibration blocks of {blocks.shape[1]} tokens, "
        f"each plan compressed with {method}"
    )
    chosen = int(np.argmin([c.calibration_loss for c in candidates]))
    return AllocationReport("auto", keep, tuple(candidates), chosen, scoring)


def auto_plan(
    loaded: LoadedModel,
    keep: float,
    method: str,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> RankPlan:
    """The plan :func:`auto_allocation` chooses."""
    return auto_allocation(loaded, keep, method, settings, progress, cache).plan


def _within(progress: ProgressFn | None, part: int, parts: int):
    """Progress of a sub-step mapped into ``part`` of ``parts`` equal shares (its message as given)."""

    def scale(sub: int, subs: int, prefix: str) -> ProgressFn | None:
        if progress is None:
            return None

        def fn(done: int, total: int, message: str) -> None:
            share = (sub + (done / total if total else 0.0)) / subs
            report(progress, round(1000 * (part + share)), 1000 * parts, f"{prefix}: {message}" if message else prefix)

        return fn

    return scale
