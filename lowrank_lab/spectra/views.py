"""Ways to look at many spectra at once: a (layer × kind) grid of one metric, and groups to overlay.

The Spectra page draws these; they hold no UI, so other programs can use them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowrank_lab.errors import SettingsError
from lowrank_lab.spectra.engine import LayerSpectrum


@dataclass(frozen=True)
class GridMetric:
    """A number per matrix for the heatmap.

    Attributes:
        label: what a person reads (with its unit or what it is a fraction of).
        value: ``value(spectrum) -> float``.
        fraction: True when the value is a fraction of the full rank (0..1).
        unit: the colour bar's title ("" for the default: fraction of full rank, or count).
        number_format: how a cell's value is printed (d3 format; "" for the default).
        color_range: the values the colour scale spans (None: the data's range).
    """

    label: str
    value: Callable[[LayerSpectrum], float]
    fraction: bool = True
    unit: str = ""
    number_format: str = ""
    color_range: tuple[float, float] | None = None


def _of_full(attr: str) -> Callable[[LayerSpectrum], float]:
    return lambda sp: getattr(sp.metrics, attr) / sp.full_rank


GRID_METRICS: dict[str, GridMetric] = {
    "stable_rank": GridMetric("stable rank (‖W‖F²/σ₁²) / full rank", _of_full("stable_rank")),
    "effective_rank": GridMetric("effective rank (entropy) / full rank", _of_full("effective_rank")),
    "energy_rank_90": GridMetric("rank keeping 90% of energy / full rank", _of_full("energy_rank_90")),
    "energy_rank_99": GridMetric("rank keeping 99% of energy / full rank", _of_full("energy_rank_99")),
    "mp_outliers": GridMetric(
        "singular values above the Marchenko–Pastur edge (count)",
        lambda sp: float(sp.metrics.mp_outliers),
        fraction=False,
    ),
    # Colours span 1..8 so the 2–6 band reads at a glance; a few layers reach far past 8.
    "alpha": GridMetric(
        "power-law exponent α of the eigenvalue density's tail (2–6: well trained)",
        lambda sp: sp.heavy_tail.alpha,
        fraction=False,
        unit="α",
        number_format=".2f",
        color_range=(1.0, 8.0),
    ),
}


@dataclass(frozen=True, eq=False)
class MetricGrid:
    """One metric laid out as layers (rows) × kinds (columns).

    Attributes:
        metric: the key in :data:`GRID_METRICS`.
        layers: layer indices, ascending, shape (L,).
        kinds: matrix kinds in model order, length K.
        values: the metric, NaN where a layer lacks a kind, shape (L, K).
        names: module name of each cell ("" where none), shape (L, K).
    """

    metric: str
    layers: list[int]
    kinds: list[str]
    values: np.ndarray
    names: np.ndarray

    def name_at(self, layer: int, kind: str) -> str | None:
        """The module at (layer, kind), or None when there is none."""
        if layer not in self.layers or kind not in self.kinds:
            return None
        name = self.names[self.layers.index(layer), self.kinds.index(kind)]
        return str(name) or None


def metric_grid(spectra: list[LayerSpectrum], metric: str) -> MetricGrid:
    """Lay ``metric`` out over (layer × kind) for the matrices inside the repeated layers.

    Raises:
        SettingsError: ``metric`` is not one of :data:`GRID_METRICS`.
    """
    if metric not in GRID_METRICS:
        raise SettingsError(f"unknown heatmap metric {metric!r}; use one of {', '.join(GRID_METRICS)}")
    layered = [sp for sp in spectra if sp.layer is not None]
    layers = sorted({sp.layer for sp in layered})
    kinds = list(dict.fromkeys(sp.kind for sp in layered))
    values = np.full((len(layers), len(kinds)), np.nan)
    names = np.full((len(layers), len(kinds)), "", dtype=object)
    fn = GRID_METRICS[metric].value
    for sp in layered:
        i, j = layers.index(sp.layer), kinds.index(sp.kind)
        values[i, j] = fn(sp)
        names[i, j] = sp.name
    return MetricGrid(metric, layers, kinds, values, names)


OVERLAYS = {
    "matrix": "this matrix only",
    "kind": "same kind in every layer",
    "layer": "every kind in this layer",
}


def overlay_group(spectra: list[LayerSpectrum], name: str, mode: str) -> list[LayerSpectrum]:
    """The spectra to draw together with ``name``, in model order (``name`` always included).

    Args:
        spectra: the model's spectra.
        name: the selected matrix.
        mode: ``matrix``, ``kind`` (same kind across layers) or ``layer`` (all kinds of its layer).

    Raises:
        SettingsError: unknown ``name`` or ``mode``.
    """
    if mode not in OVERLAYS:
        raise SettingsError(f"unknown overlay {mode!r}; use one of {', '.join(OVERLAYS)}")
    chosen = next((sp for sp in spectra if sp.name == name), None)
    if chosen is None:
        raise SettingsError(f"the model has no matrix named {name!r}")
    if mode == "kind":
        return [sp for sp in spectra if sp.kind == chosen.kind]
    if mode == "layer" and chosen.layer is not None:
        return [sp for sp in spectra if sp.layer == chosen.layer]
    return [chosen]


def scaled_values(sp: LayerSpectrum, normalise: bool) -> tuple[np.ndarray, float]:
    """Singular values and the Marchenko–Pastur edge, raw or divided by σ₁ (σ_max).

    Returns:
        (values shape (k,), edge) on the same scale.
    """
    top = float(sp.s[0]) if sp.s.size and sp.s[0] > 0 else 1.0
    scale = 1.0 / top if normalise else 1.0
    return sp.s * scale, sp.metrics.mp_edge * scale
