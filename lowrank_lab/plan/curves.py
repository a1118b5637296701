"""What the Ranks page shows, from cached singular values alone: per-matrix rows, per-kind
totals, error against rank for one matrix, and whole-model trade-off curves (parameters kept
against error).

Everything here follows from Eckart–Young (see :mod:`lowrank_lab.plan.summary`): no SVD is run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowrank_lab.dtypes import BYTES_PER_ELEMENT
from lowrank_lab.plan.presets import PRESETS, plan_energy_per_param
from lowrank_lab.plan.rank_plan import break_even_rank
from lowrank_lab.plan.summary import PlanCalculator, PlanSummary, rank_errors
from lowrank_lab.progress import ProgressFn, report
from lowrank_lab.spectra.engine import LayerSpectrum


def summary_records(summary: PlanSummary) -> list[dict]:
    """One row per matrix: rank, parameters dense/kept/saved, bytes saved, both errors.

    ``params_saved`` sums over the rows to ``summary.params_saved``.
    """
    return [
        {
            "name": r.name,
            "kind": r.kind,
            "layer": r.layer,
            "shape": f"{r.shape[0]}×{r.shape[1]}",
            "rank": r.rank if r.factorized else None,
            "break_even": break_even_rank(r.shape),
            "dense": not r.factorized,
            "params_dense": r.params_dense,
            "params_kept": r.params_kept,
            "params_saved": r.params_dense - r.params_kept,
            "saved_pct": 100.0 * (r.params_dense - r.params_kept) / r.params_dense,
            "fp16_MiB_saved": (r.params_dense - r.params_kept) * BYTES_PER_ELEMENT["float16"] / 2**20,
            "rel_frobenius_error": r.rel_frobenius_error,
            "spectral_error": r.spectral_error,
        }
        for r in summary.rows
    ]


@dataclass(frozen=True)
class KindTotals:
    """What the plan does to every matrix of one kind together.

    Attributes:
        kind: the matrix kind.
        matrices, factorized: how many there are, and how many the plan factorizes.
        params_dense, params_kept: summed over the kind's matrices.
        rel_frobenius_error: sqrt(Σ lost energy / Σ energy) over the kind's matrices.
    """

    kind: str
    matrices: int
    factorized: int
    params_dense: int
    params_kept: int
    rel_frobenius_error: float


def kind_totals(spectra: list[LayerSpectrum], summary: PlanSummary) -> dict[str, KindTotals]:
    """Per-kind sums of ``summary`` (linear matrices only), keyed by kind, in model order."""
    energy = {sp.name: sp.metrics.frobenius**2 for sp in spectra}
    acc: dict[str, list] = {}
    for r in summary.rows:
        if r.is_embedding:
            continue
        a = acc.setdefault(r.kind, [0, 0, 0, 0, 0.0, 0.0])
        e = energy.get(r.name, 0.0)
        a[0] += 1
        a[1] += r.factorized
        a[2] += r.params_dense
        a[3] += r.params_kept
        a[4] += e * r.rel_frobenius_error**2
        a[5] += e
    return {
        kind: KindTotals(kind, n, f, dense, kept, (lost / total) ** 0.5 if total else 0.0)
        for kind, (n, f, dense, kept, lost, total) in acc.items()
    }


@dataclass(frozen=True, eq=False)
class ErrorCurve:
    """Errors of the best rank-r approximation of one matrix, for every r in 1..full rank.

    Attributes:
        ranks: 1..full rank, int, shape (k,).
        rel_frobenius: ‖W − W_r‖_F / ‖W‖_F, shape (k,).
        spectral: σ_{r+1} / σ₁, shape (k,).
        params_fraction: r·(m+n) / (m·n), the parameters two factors keep, shape (k,).
        break_even: the rank from which the matrix stays dense.
    """

    ranks: np.ndarray
    rel_frobenius: np.ndarray
    spectral: np.ndarray
    params_fraction: np.ndarray
    break_even: int


def error_curve(sp: LayerSpectrum) -> ErrorCurve:
    """The error of every rank of one matrix (Eckart–Young, from its singular values)."""
    m, n = sp.shape
    ranks = np.arange(1, sp.full_rank + 1)
    fro, spectral = rank_errors(sp, ranks)
    return ErrorCurve(ranks, fro, spectral, ranks * (m + n) / (m * n), break_even_rank(sp.shape))


@dataclass(frozen=True, eq=False)
class TradeoffCurve:
    """A family of plans swept over its one setting.

    Attributes:
        label: the family, e.g. "keep a fraction of parameters".
        settings: the setting of each point, shape (p,).
        linear_kept: parameters kept as a fraction of the linear layers', shape (p,).
        weighted_error: relative Frobenius error of all linear matrices together, shape (p,).
    """

    label: str
    settings: np.ndarray
    linear_kept: np.ndarray
    weighted_error: np.ndarray


def plan_point(summary: PlanSummary) -> tuple[float, float]:
    """Where a plan sits on the trade-off chart: (linear parameters kept fraction, weighted error)."""
    kept = summary.linear_params_kept / summary.linear_params_dense if summary.linear_params_dense else 1.0
    return kept, summary.weighted_error


def _curve(label: str, calc: PlanCalculator, settings, build) -> TradeoffCurve:
    points = [plan_point(calc.summarize(build(value))) for value in settings]
    kept, err = (np.array(v, dtype=float) for v in zip(*points))
    return TradeoffCurve(label, np.asarray(settings, dtype=float), kept, err)


def tradeoff_curves(
    spectra: list[LayerSpectrum], n_points: int = 24, progress: ProgressFn | None = None
) -> list[TradeoffCurve]:
    """Sweep each preset, and the best-energy-per-parameter allocation, over its setting.

    Args:
        spectra: the model's spectra.
        n_points: points per curve.
        progress: called as ``progress(done, total, curve label)`` after each curve.

    Returns:
        One :class:`TradeoffCurve` per family: keep-params, keep-energy, fixed-rank, best.
    """
    linear = [sp for sp in spectra if not sp.is_embedding]
    max_rank = max((sp.full_rank for sp in linear), default=1)
    values = np.concatenate([np.square(sp.s) / sum(sp.shape) for sp in linear]) if linear else np.zeros(1)
    families = [
        (PRESETS["keep-params"], np.linspace(0.02, 1.0, n_points)),
        (PRESETS["keep-energy"], np.linspace(0.5, 0.999, n_points)),
        (PRESETS["fixed-rank"], np.unique(np.geomspace(1, max_rank, n_points).astype(int))),
    ]
    calc = PlanCalculator(spectra)
    curves = []
    for i, (preset, settings) in enumerate(families):
        curves.append(_curve(preset.key, calc, settings, lambda v, p=preset: p.plan(spectra, v)))
        report(progress, i + 1, len(families) + 1, preset.key)
    # Thresholds at quantiles of every σᵢ²/(m+n): from keeping almost nothing to keeping all.
    thresholds = np.quantile(values[values > 0], np.linspace(0.999, 0.0, n_points)) if np.any(values > 0) else [0]
    curves.append(_curve("best", calc, thresholds, lambda t: plan_energy_per_param(spectra, t)))
    report(progress, len(families) + 1, len(families) + 1, "best")
    return curves
