"""compress(): a rank plan turned into a model whose planned layers are LowRankLinear."""

from __future__ import annotations

import torch
from torch import nn

from lowrank_lab.cache import KeyedCache
from lowrank_lab.checks import require
from lowrank_lab.compress.calibration import CalibrationSettings
from lowrank_lab.compress.decompositions import (
    input_stats,
    linear_matrices,
    span,
    svd_decompositions,
    whitened_decompositions,
)
from lowrank_lab.compress.factorize import lapack_thread, pca_factors
from lowrank_lab.errors import ArgumentTypeError, InvalidRankPlan, SettingsError
from lowrank_lab.lowrank import LowRankLinear, set_submodule
from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.models import METHODS, CompressedModel, LoadedModel, Method, ParamCounts
from lowrank_lab.plan import RankPlan, factorizes
from lowrank_lab.progress import ProgressFn, report
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
    cache: KeyedCache | None = None,
) -> CompressedModel:
    """Factorize the planned linear layers of a copy of the model.

    The shared ``loaded.model`` is not changed: the layers are replaced on ``loaded.copy()``.

    Args:
        loaded: the model to compress.
        plan: module name → rank. Modules left out stay dense, and so do those whose rank is at
            or past break-even (two factors would be no smaller), unless
            ``dense_past_break_even`` is False.
        method: ``svd`` (truncated SVD of W), ``whitened`` (SVD-LLM: truncation error measured
            on the calibration inputs) or ``pca`` (output projected on its principal components).
        calibration: the calibration text and sizes for ``whitened`` and ``pca`` (default:
            32 blocks of 256 tokens of the built-in calibration split); ignored by ``svd``.
        progress: called as ``progress(done, total, message)``.
        dense_past_break_even: False factorizes every planned layer, even at full rank (for
            parity checks).
        cache: where calibration statistics and whitened decompositions are kept (default:
            :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`).

    Returns:
        The :class:`CompressedModel`; ``plan`` holds the ranks actually factorized and
        ``params`` the parameter counts, of the whole model and of its linear layers.

    Raises:
        InvalidRankPlan: the plan names modules the model lacks, embeddings, or ranks above full rank.
        SettingsError: unknown method.
        DataError: data-aware method on a model with no tokenizer, or too little calibration text.
    """
    check_method(method)
    planned = check_plan(loaded, plan)
    require(calibration, (CalibrationSettings, type(None)), "calibration", "pass CalibrationSettings(...) or None")
    settings = calibration or CalibrationSettings()
    todo = [m for m in planned if not dense_past_break_even or factorizes(plan.get(m.name), m.shape)]
    # Calibration and decompositions take most of the time (when not cached), factorizing the rest.
    prepare, factorize = span(progress, 0.0, 0.8), span(progress, 0.8, 1.0)
    if method == "whitened" and todo:
        decs = whitened_decompositions(loaded, settings, prepare, cache)
    elif method == "svd":
        decs = svd_decompositions(loaded, [m.name for m in todo])
    else:
        decs = {}
    stats = input_stats(loaded, settings, prepare, cache) if method == "pca" and todo else {}
    model = loaded.copy()
    with torch.no_grad():
        for i, m in enumerate(todo):
            rank = plan.get(m.name)
            module = model.get_submodule(m.name)
            bias = None if module.bias is None else module.bias.detach()
            if method == "pca":
                with lapack_thread():
                    b, a, bias = pca_factors(m.matrix(), bias, stats[m.name], rank)
            else:
                b, a = decs[m.name].factors(rank)
            set_submodule(model, m.name, _layer(b, a, bias, m.weight))
            report(factorize, i + 1, len(todo), f"factorized {m.name}")
    model.requires_grad_(False)  # like the loaded model; fine-tuning turns on what it trains
    done = RankPlan({m.name: plan.get(m.name) for m in todo})
    return CompressedModel(
        model=model,
        tokenizer=loaded.tokenizer,
        source=loaded.spec,
        plan=done,
        method=method,
        calibration={} if method == "svd" else settings.describe(),
        params=param_counts(loaded, model),
    )


def _layer(b: torch.Tensor, a: torch.Tensor, bias: torch.Tensor | None, like: torch.Tensor) -> LowRankLinear:
    cast = dict(dtype=like.dtype, device=like.device)
    return LowRankLinear.from_factors(b.to(**cast), a.to(**cast), None if bias is None else bias.to(**cast))


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
