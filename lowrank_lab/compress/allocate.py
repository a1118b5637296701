"""allocate(): a rank plan under one budget, the fraction of linear-layer parameters kept."""

from __future__ import annotations

from typing import Literal

from lowrank_lab.cache import KeyedCache
from lowrank_lab.checks import is_fraction, require
from lowrank_lab.compress.apply import check_method
from lowrank_lab.compress.auto import auto_allocation, whitened_values
from lowrank_lab.compress.calibration import CalibrationSettings
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.results import AllocationReport, Candidate, plan_linear_params
from lowrank_lab.errors import SettingsError
from lowrank_lab.models import LoadedModel, Method
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn
from lowrank_lab.spectra.engine import LayerSpectrum, spectrum_of

Strategy = Literal["uniform", "auto"]
STRATEGIES: tuple[Strategy, ...] = ("uniform", "auto")


def check_keep(keep: float) -> None:
    """Raises SettingsError unless ``keep`` is a number in (0, 1]."""
    if not is_fraction(keep):
        raise SettingsError(
            f"the budget keep={keep!r} must be the fraction of linear-layer parameters to keep, in (0, 1]; "
            "e.g. 0.8 removes 20%"
        )


def allocate(
    loaded: LoadedModel,
    keep: float,
    strategy: Strategy = "uniform",
    method: Method = "whitened",
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> RankPlan:
    """Ranks for every linear matrix so that about ``keep`` of their parameters remain.

    The plan of :func:`allocate_explained` (same arguments), which also says why.
    """
    return allocate_explained(loaded, keep, strategy, method, calibration, progress, cache).plan


def allocate_explained(
    loaded: LoadedModel,
    keep: float,
    strategy: Strategy = "uniform",
    method: Method = "whitened",
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> AllocationReport:
    """Ranks for every linear matrix so that about ``keep`` of their parameters remain, and why.

    Args:
        loaded: the model (not changed).
        keep: fraction of the linear layers' parameters to keep, in (0, 1].
        strategy: ``uniform`` (every matrix keeps the same fraction) or ``auto`` (ranks placed
            where the calibration loss is least hurt; see :mod:`lowrank_lab.compress.auto`).
        method: the compression method the plan is meant for.
        calibration: calibration text and sizes for ``auto`` (default: built-in split, 32×256).
        progress: called as ``progress(done, total, message)``.
        cache: where ``auto`` keeps what calibration computes (default:
            :data:`~lowrank_lab.compress.calibration.CALIBRATION_CACHE`).

    Returns:
        The candidate plans considered (``auto``: the loss-weighted and the uniform plan with
        their calibration losses; ``uniform``: that one plan) and the one chosen, whose
        ``.plan`` leaves out the matrices that stay dense (all of them at ``keep=1``).

    Raises:
        SettingsError: ``keep`` outside (0, 1], unknown strategy or method, ``auto`` on an encoder.
        DataError: ``auto`` on a model with no tokenizer, or too little calibration text.
    """
    require(loaded, LoadedModel, "allocate's model", "load one with load_model")
    check_keep(keep)
    check_method(method)
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise SettingsError(f"unknown allocation strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    matrices = linear_matrices(loaded)
    if keep == 1 or strategy == "uniform":
        plan = RankPlan() if keep == 1 else plan_keep_params(matrices, float(keep))  # keep=1: everything dense
        return AllocationReport(
            strategy, float(keep), (Candidate("uniform", plan, plan_linear_params(matrices, plan)),)
        )
    if loaded.task != "causal-lm":
        raise SettingsError(
            f"auto allocation measures how each matrix hurts the language-model loss, and {loaded.title} "
            f"({loaded.architecture}) is an encoder with no such loss; use strategy 'uniform'"
        )
    return auto_allocation(loaded, float(keep), method, calibration or CalibrationSettings(), progress, cache)


def whitened_spectra(
    loaded: LoadedModel,
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
    cache: KeyedCache | None = None,
) -> list[LayerSpectrum]:
    """Singular values of W·S for every linear matrix (S Sᵀ = XᵀX of its calibration inputs).

    σᵢ² is what dropping that direction costs in squared output error summed over the
    calibration tokens, the data-aware counterpart of ``compute_spectra``.

    Raises:
        DataError: no tokenizer, or calibration text too short.
    """
    require(loaded, LoadedModel, "whitened_spectra's model", "load one with load_model")
    require(calibration, (CalibrationSettings, type(None)), "calibration", "pass CalibrationSettings(...) or None")
    values = whitened_values(loaded, calibration, progress, cache)
    return [spectrum_of(m, values[m.name].copy()) for m in linear_matrices(loaded)]
