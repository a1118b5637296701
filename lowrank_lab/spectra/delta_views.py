"""Ways to look at a model's change: a (layer × kind) grid of "how low-rank is the change", and one pair's spectra.

The Compare page draws these; they hold no UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowrank_lab.errors import SettingsError
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.delta import MatrixDelta, ModelDelta
from lowrank_lab.spectra.sources import WeightSource
from lowrank_lab.spectra.svd import singular_values
from lowrank_lab.spectra.views import GridMetric, MetricGrid


@dataclass(frozen=True)
class DeltaMetric:
    """A number per matrix change for the heatmap (see :class:`~lowrank_lab.spectra.views.GridMetric`)."""

    grid: GridMetric
    value: Callable[[MatrixDelta], float]


def _of_full(fn: Callable[[MatrixDelta], float]) -> Callable[[MatrixDelta], float]:
    return lambda d: fn(d) / d.spectrum.full_rank


# The GridMetric carries the label, unit and format the heatmap draws; its value function is not
# used (a change's numbers need the MatrixDelta, not only its spectrum), so it is a NaN stand-in.
DELTA_METRICS: dict[str, DeltaMetric] = {
    key: DeltaMetric(GridMetric(label, lambda sp: np.nan, fraction, unit, fmt), value)
    for key, label, value, fraction, unit, fmt in (
        ("rank", "rank of the change ΔW / full rank", _of_full(lambda d: d.rank), True, "", ""),
        ("energy_rank_90", "rank keeping 90% of ΔW's energy / full rank",
         _of_full(lambda d: d.spectrum.metrics.energy_rank_90), True, "", ""),
        ("energy_rank_99", "rank keeping 99% of ΔW's energy / full rank",
         _of_full(lambda d: d.spectrum.metrics.energy_rank_99), True, "", ""),
        ("stable_rank", "stable rank of ΔW (‖ΔW‖F²/σ₁²) / full rank",
         _of_full(lambda d: d.spectrum.metrics.stable_rank), True, "", ""),
        ("relative_change", "size of the change ‖ΔW‖F / ‖W₁‖F", lambda d: d.relative_change, False,
         "‖ΔW‖/‖W₁‖", ".3g"),
    )
}  # fmt: skip


def delta_grid(delta: ModelDelta, metric: str) -> MetricGrid:
    """Lay ``metric`` of every change out over (layer × kind), for the matrices inside the repeated layers.

    Raises:
        SettingsError: ``metric`` is not one of :data:`DELTA_METRICS`.
    """
    if metric not in DELTA_METRICS:
        raise SettingsError(f"unknown change metric {metric!r}; use one of {', '.join(DELTA_METRICS)}")
    layered = [d for d in delta.matrices if d.spectrum.layer is not None]
    layers = sorted({d.spectrum.layer for d in layered})
    kinds = list(dict.fromkeys(d.spectrum.kind for d in layered))
    values = np.full((len(layers), len(kinds)), np.nan)
    names = np.full((len(layers), len(kinds)), "", dtype=object)
    fn = DELTA_METRICS[metric].value
    for d in layered:
        i, j = layers.index(d.spectrum.layer), kinds.index(d.spectrum.kind)
        values[i, j] = fn(d)
        names[i, j] = d.name
    return MetricGrid(metric, layers, kinds, values, names)


def pair_spectra(
    base: WeightSource, tuned: WeightSource, name: str, cache: SpectrumCache | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values of matrix ``name`` in both models (from the disk cache when there).

    Returns:
        (σ of W₁, σ of W₂), each float64, descending.
    """
    out = []
    for source in (base, tuned):
        w = source.matrix(name)
        digest = weight_digest(w) if cache is not None else ""
        s = cache.get(digest) if cache is not None else None
        if s is None or s.shape != (min(w.shape),):
            s = singular_values(w)
            if cache is not None:
                cache.put(digest, s)
        out.append(s)
    return out[0], out[1]
