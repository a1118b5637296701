"""Rank allocation with its explanation: the candidate plans, and what each scored.

``uniform`` gives every matrix the same fraction. ``auto`` prices every whitened component of
every matrix by what dropping it costs the calibration loss (:mod:`.costs`, one block-by-block
backward pass), solves the Lagrangian over the budget (:func:`lagrangian_plan`) and keeps the
uniform plan as a fall-back candidate; candidates are scored by their calibration loss after a
cheap compression, and the best is returned. The evaluation text is never read.
"""

from __future__ import annotations

import numpy as np
import torch

from lowrank_lab.compress.auto import lagrangian_plan
from lowrank_lab.compress.calibration import STATS_CACHE, CalibrationSettings, calibration_blocks
from lowrank_lab.compress.costs import LayerCosts, streamed_costs, streamed_spectra
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.methods import linear_matrices
from lowrank_lab.compress.results import AllocationReport, Candidate
from lowrank_lab.compress.sources import MemorySource
from lowrank_lab.compress.walk import batches_of, prepared_skeleton
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.models import LoadedModel
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn, report

GRADIENT_BATCH = 4  # calibration blocks per forward/backward of one block


def plan_linear_params(matrices: list[WeightMatrix], plan: RankPlan) -> int:
    """Parameters the linear matrices keep under ``plan`` (dense where it has no rank)."""
    total = 0
    for m in matrices:
        r = plan.get(m.name)
        total += m.params if r is None else min(m.params, r * sum(m.shape))
    return total


def layer_costs(
    loaded: LoadedModel,
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, LayerCosts]:
    """Whitened spectrum and loss cost of every component of every linear matrix (cached per settings).

    Raises:
        DataError: no tokenizer, or too little calibration text.
    """
    settings = calibration or CalibrationSettings()
    ids = calibration_blocks(loaded, settings)

    def make():
        source = MemorySource(loaded)
        model, layout = prepared_skeleton(source, torch.device(device))
        names = [m.name for m in linear_matrices(loaded)]
        return streamed_costs(model, layout, source, batches_of(ids, GRADIENT_BATCH), names, device, progress)

    return STATS_CACHE.get_or_make(loaded.model, ("layer-costs", settings.key()), make)


def component_costs(
    loaded: LoadedModel, calibration: CalibrationSettings | None = None, progress: ProgressFn | None = None
) -> dict[str, np.ndarray]:
    """Loss-weighted cost of dropping each whitened component of each linear matrix (cached).

    cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)² with g_t the calibration loss's gradient at the layer's
    output (see :mod:`lowrank_lab.compress.costs`).

    Returns:
        name → costs (k,) float64, in the order of the whitened singular values (descending σ).
    """
    return {name: c.cost for name, c in layer_costs(loaded, calibration, progress).items()}


def whitened_values(
    loaded: LoadedModel, calibration: CalibrationSettings | None = None, progress: ProgressFn | None = None
) -> dict[str, np.ndarray]:
    """Whitened singular values of every linear matrix, forward only (encoders too; cached)."""
    settings = calibration or CalibrationSettings()
    ids = calibration_blocks(loaded, settings)

    def make():
        source = MemorySource(loaded)
        model, layout = prepared_skeleton(source, torch.device("cpu"))
        names = [m.name for m in linear_matrices(loaded)]
        return streamed_spectra(model, layout, source, batches_of(ids, GRADIENT_BATCH), names, "cpu", progress)

    return STATS_CACHE.get_or_make(loaded.model, ("whitened-values", settings.key()), make)


SCORE_BLOCKS = 8  # calibration blocks each candidate plan is scored on


def allocate_explained(
    loaded: LoadedModel,
    keep: float,
    strategy: str,
    method: str,
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
) -> tuple[RankPlan, AllocationReport]:
    """A plan within ``keep`` of the linear parameters, and the candidates it was chosen from.

    ``uniform``: one candidate. ``auto``: the loss-weighted Lagrangian plan and the uniform
    plan, each compressed (whitened, on the dense model's activations: the cheap compression
    whose decompositions do not depend on the plan) and scored by its calibration loss on the
    first :data:`SCORE_BLOCKS` calibration blocks; the lower wins, so ``auto`` is never worse
    than ``uniform`` on the text it is scored on.

    Raises:
        SettingsError: ``auto`` on a model without a language-model loss.
        DataError: no tokenizer, or too little calibration text.
    """
    matrices = linear_matrices(loaded)
    uniform = plan_keep_params(matrices, keep)
    if strategy == "uniform":
        return uniform, AllocationReport(
            "uniform", keep, (Candidate("uniform", uniform, plan_linear_params(matrices, uniform)),)
        )
    settings = calibration or CalibrationSettings()
    costs = component_costs(loaded, settings, _part(progress, 0, 2))
    weighted = lagrangian_plan(matrices, costs, keep)
    plans = [("loss-weighted", weighted), ("uniform", uniform)]
    blocks = calibration_blocks(loaded, settings)[:SCORE_BLOCKS]
    scorer = EngineSettings(sequential=False, anchored=False)
    candidates = []
    for i, (name, plan) in enumerate(plans):
        from lowrank_lab.compress.apply import compress

        model = compress(loaded, plan, method, settings, engine=scorer).model
        loss = mean_loss(model, blocks)
        del model
        candidates.append(Candidate(name, plan, plan_linear_params(matrices, plan), loss))
        report(progress, len(plans) + i + 1, 2 * len(plans), f"scored candidate {name}")
    chosen = int(np.nanargmin([c.calibration_loss for c in candidates]))
    scoring = (
        f"calibration loss on {blocks.shape[0]}×{blocks.shape[1]} calibration tokens after whitened "
        "truncation on the dense model's activations"
    )
    return candidates[chosen].plan, AllocationReport("auto", keep, tuple(candidates), chosen, scoring)


def mean_loss(model, blocks: torch.Tensor, batch_size: int = 2) -> float:
    """Mean next-token loss of ``model`` on token blocks (samples, seq_len)."""
    from lowrank_lab.compress.sensitivity import calibration_loss

    return calibration_loss(model, blocks, batch_size)


def _part(progress: ProgressFn | None, index: int, parts: int) -> ProgressFn | None:
    if progress is None:
        return None

    def fn(done: int, total: int, message: str) -> None:
        progress(index * total + done, parts * total, message)

    return fn
