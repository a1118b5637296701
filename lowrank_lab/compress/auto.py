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
"""

from __future__ import annotations

import numpy as np

from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.apply import compress
from lowrank_lab.compress.calibration import CALIBRATION_CACHE, CalibrationSettings, calibration_blocks, calibration_key
from lowrank_lab.compress.decompositions import linear_matrices, whitened_decompositions
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
        decs = whitened_decompositions(loaded, settings, progress, store)
        blocks = calibration_blocks(loaded, settings)
        fisher = output_fisher(loaded.copy(), decs, blocks, progress=progress)
        return {name: d.s.double().numpy() ** 2 * fisher[name] for name, d in decs.items()}

    return store.get_or_compute(calibration_key(loaded, "costs", settings), make)


def auto_plan(
    loaded: LoadedModel,
    keep: float,
    method: str,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> RankPlan:
    """The ``auto`` allocation (see the module docstring).

    The costs always come from whitened decompositions (they are what the loss pays per
    parameter); the candidates are scored compressed with ``method``.

    Returns:
        Of the loss-weighted Lagrangian plan and the uniform plan, the one whose compression
        with ``method`` has the lower loss on (up to) the first ``SCORE_BLOCKS`` calibration blocks.
    """
    matrices = linear_matrices(loaded)
    costs = component_costs(loaded, settings, progress, cache)
    candidates = [lagrangian_plan(matrices, costs, keep), plan_keep_params(matrices, keep)]
    blocks = calibration_blocks(loaded, settings)[:SCORE_BLOCKS]  # (≤ SCORE_BLOCKS, seq_len)
    scores = []
    for i, plan in enumerate(candidates):
        model = compress(loaded, plan, method, settings, cache=cache).model
        scores.append(calibration_loss(model, blocks))
        del model
        report(progress, i + 1, len(candidates), "scoring candidate plans on calibration text")
    return candidates[int(np.argmin(scores))]
