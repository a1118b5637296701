"""Decompositions of every linear matrix of a model, per method, cached per calibration.

Whitened decompositions cost one calibration pass and one SVD per matrix, so they are kept
(float32) in a :class:`~lowrank_lab.cache.KeyedCache` per (model content, calibration):
``whitened_spectra``, ``allocate`` and ``compress`` on the same settings compute them once.
"""

from __future__ import annotations

import torch

from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.calibration import (
    CALIBRATION_CACHE,
    CalibrationSettings,
    InputStats,
    calibration_key,
    layer_input_stats,
)
from lowrank_lab.compress.factorize import (
    Decomposition,
    lapack_thread,
    svd_decomposition,
    whitened_decomposition,
)
from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.models import LoadedModel
from lowrank_lab.progress import ProgressFn, report


def linear_matrices(loaded: LoadedModel) -> list[WeightMatrix]:
    """The model's Linear and Conv1D matrices (no embeddings, no head tied to them)."""
    return weight_matrices(loaded.model, include_embeddings=False)


def input_stats(
    loaded: LoadedModel,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, InputStats]:
    """Input statistics of every linear matrix (cached per model and settings in ``cache``)."""
    names = [m.name for m in linear_matrices(loaded)]
    return layer_input_stats(loaded, names, settings, progress, cache)


def whitened_decompositions(
    loaded: LoadedModel,
    settings: CalibrationSettings,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> dict[str, Decomposition]:
    """Whitened decomposition of every linear matrix, name → :class:`Decomposition` (float32).

    Kept in ``cache`` (default: :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`)
    with the input statistics they come from.

    Raises:
        DataError: no tokenizer, or calibration text too short.
    """

    def make():
        stats = input_stats(loaded, settings, _stage(progress, 0, 2), store)
        matrices = linear_matrices(loaded)
        out = {}
        with torch.no_grad(), lapack_thread():
            for i, m in enumerate(matrices):
                d = whitened_decomposition(m.matrix(), stats[m.name])
                out[m.name] = Decomposition(d.u.float(), d.s, d.a.float())
                report(progress, len(matrices) + i + 1, 2 * len(matrices), f"whitened SVD {m.name}")
        return out

    store = CALIBRATION_CACHE if cache is None else cache
    return store.get_or_compute(calibration_key(loaded, "whitened", settings), make)


def svd_decompositions(loaded: LoadedModel, names: list[str]) -> dict[str, Decomposition]:
    """Plain SVD of the named matrices (not cached: needs no data and is cheap to redo)."""
    by_name = {m.name: m for m in linear_matrices(loaded)}
    with torch.no_grad(), lapack_thread():
        return {n: svd_decomposition(by_name[n].matrix()) for n in names}


def _stage(progress: ProgressFn | None, stage: int, stages: int) -> ProgressFn | None:
    """A progress callback for one of ``stages`` equal parts of a longer job."""
    if progress is None:
        return None

    def fn(done: int, total: int, message: str) -> None:
        progress(stage * total + done, stages * total, message)

    return fn


def span(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """A progress callback for the part [start, end] (fractions) of a longer job, so parts that
    each count from 0 move one bar forward instead of restarting it."""
    if progress is None:
        return None

    def fn(done: int, total: int, message: str) -> None:
        share = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        progress(round(1000 * (start + (end - start) * share)), 1000, message)

    return fn
