"""compress(): a rank plan turned into a model whose planned layers are LowRankLinear."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lowrank_lab.checks import check_device, require
from lowrank_lab.compress.calibration import CalibrationSettings, calibration_blocks
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.sources import MemorySource
from lowrank_lab.compress.walk import walk_plans_scored, walk_plans_to_memory
from lowrank_lab.errors import ArgumentTypeError, DataError, InvalidRankPlan, SettingsError
from lowrank_lab.lowrank import LowRankLinear
from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.models import METHODS, CompressedModel, LoadedModel, Method, ParamCounts
from lowrank_lab.plan import RankPlan, factorizes
from lowrank_lab.progress import ProgressFn
from lowrank_lab.spectra.engine import check_finite


def check_method(method: str) -> None:
    if not isinstance(method, str) or method not in METHODS:
        raise SettingsError(f"unknown compression method {method!r}; use one of {', '.join(METHODS)}")


def check_plan(loaded: LoadedModel, plan: RankPlan) -> list[WeightMatrix]:
    """The planned linear matrices, in module order.

    Raises:
        InvalidRankPlan: unknown module names, ranks above full rank, or embeddings in the plan.
        NonFiniteError: a planned matrix holds NaN or infinity.
    """
    if not isinstance(plan, RankPlan):
        raise InvalidRankPlan(
            f"compress needs a RankPlan, got {type(plan).__name__}; build one with RankPlan({{name: rank}})"
        )
    if not isinstance(loaded, LoadedModel):
        raise ArgumentTypeError(f"compress takes a LoadedModel (from load_model), got {type(loaded).__name__}")
    everything = weight_matrices(loaded.model)
    plan.validate(everything, model=loaded.model)
    embeddings = [m.name for m in everything if m.is_embedding and plan.get(m.name) is not None]
    if embeddings:
        raise InvalidRankPlan(
            f"{', '.join(embeddings)} is an embedding; only Linear and Conv1D layers can be factorized. "
            "Remove it from the plan"
        )
    planned = [m for m in linear_matrices(loaded) if plan.get(m.name) is not None]
    for m in planned:
        check_finite(m)  # a NaN weight has no decomposition: say which, before any work
    return planned


def compress(
    loaded: LoadedModel,
    plan: RankPlan,
    method: Method = "whitened",
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    *,
    dense_past_break_even: bool = True,
    engine: EngineSettings | None = None,
    device: str = "cpu",
) -> CompressedModel:
    """Factorize the planned linear layers, block by block (see :mod:`lowrank_lab.compress.engine`).

    The shared ``loaded.model`` is read, never changed: the compressed model is built on a
    skeleton filled with copies of its tensors one block at a time (the whole model is never
    copied). Block k is calibrated on what the compressed blocks before it produce, and each
    layer is refit to the dense layer's outputs.

    Args:
        loaded: the model to compress.
        plan: module name → rank. Modules left out stay dense, and so do those whose rank is at
            or past break-even (two factors would be no smaller), unless
            ``dense_past_break_even`` is False.
        method: ``svd`` (truncated SVD of W), ``whitened`` (whitened truncation on the inputs
            the compressed blocks before produce, refit to the dense layer's outputs) or ``pca``
            (output projected on its principal components).
        calibration: the calibration text and sizes for ``whitened`` and ``pca`` (default:
            32 blocks of 256 tokens of the built-in calibration split); ignored by ``svd``.
        progress: called as ``progress(done, total, message)`` once per block.
        dense_past_break_even: False factorizes every planned layer, even at full rank (for
            parity checks).
        engine: how the walk calibrates and refits (default :class:`EngineSettings`).
        device: where the block work runs (``cpu`` or ``cuda``).

    Returns:
        The :class:`CompressedModel` (in the loaded model's dtype, on the CPU); ``plan`` holds
        the ranks actually factorized and ``params`` the parameter counts, of the whole model
        and of its linear layers.

    Raises:
        InvalidRankPlan: the plan names modules the model lacks, embeddings, or ranks above full rank.
        SettingsError: unknown method, or a device that cannot be used.
        DataError: data-aware method on a model with no tokenizer, or too little calibration text.
    """
    return compress_plans(
        loaded,
        [plan],
        method,
        calibration,
        progress,
        dense_past_break_even=dense_past_break_even,
        engine=engine,
        device=device,
    )[0]


def compress_plans(
    loaded: LoadedModel,
    plans: Sequence[RankPlan],
    method: Method = "whitened",
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    *,
    dense_past_break_even: bool = True,
    engine: EngineSettings | None = None,
    device: str = "cpu",
) -> list[CompressedModel]:
    """:func:`compress` for several plans at once, in one walk over the blocks.

    With more than one plan, ``engine.sequential`` must be off: each layer is calibrated on the
    dense model's activations, which all plans share, so the blocks run once and each layer is
    decomposed once (what ``auto`` scores its candidate plans with).

    Returns:
        One :class:`CompressedModel` per plan, in order.

    Raises:
        as :func:`compress`; SettingsError for several plans with a sequential engine.
    """
    walk = _checked_walk(loaded, plans, method, calibration, engine, device, dense_past_break_even)
    settings, rank_dicts = walk.calibration, walk.ranks
    dtype = next(loaded.model.parameters()).dtype
    models = walk_plans_to_memory(
        MemorySource(loaded), rank_dicts, method, walk.ids, walk.engine, walk.device, dtype, progress
    )
    return [
        CompressedModel(
            model=model,
            tokenizer=loaded.tokenizer,
            source=loaded.spec,
            plan=RankPlan(ranks),
            method=method,
            calibration={} if method == "svd" else settings.describe(),
            params=param_counts(loaded, model),
        )
        for model, ranks in zip(models, rank_dicts)
    ]


def score_plans(
    loaded: LoadedModel,
    plans: Sequence[RankPlan],
    score_ids: torch.Tensor,
    method: Method = "whitened",
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    *,
    engine: EngineSettings | None = None,
    device: str = "cpu",
) -> list[float]:
    """Each plan's mean next-token loss on ``score_ids`` after :func:`compress_plans`' compression.

    The same walk, but no compressed model is kept: each compressed block takes the plan's
    scoring tokens one block further and is freed (:func:`~lowrank_lab.compress.walk.walk_plans_scored`),
    so the candidates of ``auto`` cost one block each in memory instead of one model each.

    Args:
        score_ids: token ids (blocks, seq_len) to score on.

    Raises:
        as :func:`compress_plans`; DataError for ``score_ids`` that are not token blocks.
    """
    require(score_ids, torch.Tensor, "the scoring tokens", "pass token ids of shape (blocks, seq_len)")
    if score_ids.dim() != 2 or score_ids.shape[0] < 1 or score_ids.shape[1] < 2 or score_ids.is_floating_point():
        raise DataError(
            f"the scoring tokens must be integer ids of shape (blocks, seq_len ≥ 2), got {tuple(score_ids.shape)} "
            f"{score_ids.dtype}"
        )
    walk = _checked_walk(loaded, plans, method, calibration, engine, device, True)
    return walk_plans_scored(
        MemorySource(loaded), walk.ranks, method, walk.ids, walk.engine, walk.device, score_ids, progress=progress
    )


@dataclass(frozen=True)
class _CheckedWalk:
    calibration: CalibrationSettings
    engine: EngineSettings
    device: torch.device
    ranks: list[dict[str, int]]
    ids: torch.Tensor | None


def _checked_walk(loaded, plans, method, calibration, engine, device, dense_past_break_even) -> _CheckedWalk:
    """The arguments of a walk over ``plans``, checked: each plan's layers to factorize and the calibration ids."""
    check_method(method)
    require(calibration, (CalibrationSettings, type(None)), "calibration", "pass CalibrationSettings(...) or None")
    require(engine, (EngineSettings, type(None)), "engine", "pass EngineSettings(...) or None")
    engine = engine or EngineSettings()
    if len(plans) > 1 and engine.sequential:
        raise SettingsError(
            "several plans share one walk only on the dense model's activations: pass an engine with sequential=False"
        )
    dev = check_device(device)
    settings = calibration or CalibrationSettings()
    todos = []
    for plan in plans:
        planned = check_plan(loaded, plan)
        todos.append([m for m in planned if not dense_past_break_even or factorizes(plan.get(m.name), m.shape)])
    ids = calibration_blocks(loaded, settings) if method != "svd" and any(todos) else None
    rank_dicts = [{m.name: plan.get(m.name) for m in todo} for plan, todo in zip(plans, todos)]
    return _CheckedWalk(settings, engine, dev, rank_dicts, ids)


def param_counts(loaded: LoadedModel, compressed: nn.Module) -> ParamCounts:
    """Parameter counts before and after, over the whole model and over its linear layers' weights."""
    linear_dense = sum(m.params for m in linear_matrices(loaded))
    linear_compressed = 0
    for module in compressed.modules():
        if isinstance(module, LowRankLinear):
            linear_compressed += module.A.weight.numel() + module.B.weight.numel()
    # Dense linear layers that remain: every listed matrix of the compressed model that is not a factor.
    factor_ids = {
        id(p) for mod in compressed.modules() if isinstance(mod, LowRankLinear) for p in (mod.A.weight, mod.B.weight)
    }
    linear_compressed += sum(
        m.params for m in weight_matrices(compressed, include_embeddings=False) if id(m.weight) not in factor_ids
    )
    return ParamCounts(
        dense=loaded.n_params,
        compressed=sum(p.numel() for p in compressed.parameters()),
        linear_dense=linear_dense,
        linear_compressed=linear_compressed,
    )
