"""Figures of the Spectra page: overlaid spectra with energy curves, and the (layer × kind) heatmap."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.views import GRID_METRICS, GridMetric, MetricGrid, scaled_values
from lowrank_lab.ui.formatting import matrix_label

MP_DASH = "dash"


def _colors(n: int) -> list[str]:
    """Distinct colors for a few traces; an ordered scale (by layer) for many."""
    if n <= len(qualitative.Plotly):
        return list(qualitative.Plotly[:n])
    return sample_colorscale("Viridis", list(np.linspace(0, 0.95, n)))


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis over [lo, hi], every one written out in full.

    Plotly labels the minor ticks of a log axis with a bare digit ("1, 9, 8, …, 2"), which
    reads as nonsense when the range holds no power of ten. These ticks are 1-2-5 steps per
    decade (just the powers of ten past four decades), each labelled with its value.
    """
    lo, hi = max(lo, 1e-300), max(hi, lo * 1.0001)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1,) if last - first > 4 else (1, 2, 5)
    values = [m * 10.0**e for e in range(first, last + 1) for m in steps if lo <= m * 10.0**e <= hi]
    if len(values) < 3:  # a narrow range: finer steps so at least a few ticks show
        values = [m * 10.0**e for e in range(first, last + 1) for m in range(1, 10) if lo <= m * 10.0**e <= hi]
    return values, [f"{v:.3g}" for v in values]


def _add_spectrum(
    fig: go.Figure, sp: LayerSpectrum, color: str, bold: bool, normalise: bool, fraction: bool, edge_line: bool
) -> None:
    """One matrix's traces: its values and (if ``edge_line``) its MP edge (left), its energy curve (right)."""
    values, edge = scaled_values(sp, normalise)
    x = np.arange(1, sp.full_rank + 1) / (sp.full_rank if fraction else 1)
    line = {"color": color, "width": 3 if bold else 1.5}
    hover = f"{sp.name}<br>i=%{{x}}<br>%{{y:.4g}}<extra></extra>"
    common = {"mode": "lines", "legendgroup": sp.name}
    label = matrix_label(sp.name, sp.kind, sp.layer)
    fig.add_trace(go.Scatter(x=x, y=values, name=label, line=line, hovertemplate=hover, **common), row=1, col=1)
    if edge_line:
        dashed = {"color": color, "width": 1.5 if bold else 1, "dash": MP_DASH}
        edge_hover = f"{sp.name}<br>MP edge %{{y:.4g}}<extra></extra>"
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[edge, edge], showlegend=False, line=dashed,
                                 hovertemplate=edge_hover, **common), row=1, col=1)  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=sp.cumulative_energy(), showlegend=False, line=line, hovertemplate=hover,
                             **common), row=1, col=2)  # fmt: skip


def spectrum_figure(group: list[LayerSpectrum], selected: str, normalise: bool, rank_fraction: bool) -> go.Figure:
    """Singular values (log scale) with each matrix's Marchenko–Pastur edge, beside cumulative energy.

    Args:
        group: the spectra to overlay.
        selected: the name drawn thicker.
        normalise: divide every spectrum (and its edge) by its σ₁.
        rank_fraction: put i / full rank on the x axis (compares matrices of different sizes).
    """
    # Many overlaid edges bunch into a smear: with more than one matrix only the selected one's is drawn.
    edge_of = "" if len(group) == 1 else " of the selected matrix"
    titles = (
        "Singular values σᵢ" + (" / σ₁" if normalise else "") + f" (dashed: Marchenko–Pastur edge{edge_of})",
        "Cumulative energy Σ<sub>j≤i</sub> σ<sub>j</sub>² / Σ σ<sub>j</sub>²",
    )
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09, subplot_titles=titles)
    shown = []
    for sp, color in zip(group, _colors(len(group))):
        bold = sp.name == selected
        _add_spectrum(fig, sp, color, bold, normalise, rank_fraction, edge_line=len(group) == 1 or bold)
        values, edge = scaled_values(sp, normalise)
        shown.extend([float(values[values > 0].min(initial=np.inf)), float(values.max(initial=0.0))])
        if len(group) == 1 or bold:
            shown.append(float(edge))
    fig.update_xaxes(title_text="i / full rank" if rank_fraction else "index i (rank)")
    y_title = "σᵢ / σ₁ (log)" if normalise else "σᵢ (log)"
    positive = [v for v in shown if 0 < v < np.inf]
    ticks = log_ticks(min(positive), max(positive)) if positive else ([], [])
    fig.update_yaxes(type="log", tickvals=ticks[0], ticktext=ticks[1], title_text=y_title, row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction of energy kept by rank i", row=1, col=2)
    for level in (0.9, 0.99):
        fig.add_hline(y=level, line={"color": "gray", "width": 1, "dash": "dot"}, row=1, col=2,
                      annotation_text=f"{level:.0%}", annotation_position="bottom right")  # fmt: skip
    fig.update_layout(height=430, margin={"t": 40, "b": 40, "l": 60, "r": 10}, legend={"font": {"size": 10}},
                      hovermode="closest")  # fmt: skip
    fig.update_annotations(font_size=13)
    return fig


def _cell_markers(grid: MetricGrid, metric: GridMetric) -> go.Scatter:
    """A transparent marker on every cell, named by ``customdata``, for clicks and hover."""
    rows, cols = np.nonzero(grid.names != "")
    fmt = metric.number_format or (".3f" if metric.fraction else ".0f")
    return go.Scatter(
        x=[grid.kinds[j] for j in cols],
        y=[grid.layers[i] for i in rows],
        mode="markers",
        marker={"symbol": "square", "size": 16, "color": "rgba(0,0,0,0)"},
        customdata=[grid.names[i, j] for i, j in zip(rows, cols)],
        text=grid.values[rows, cols],
        hovertemplate=f"%{{customdata}}<br>{metric.label}: %{{text:{fmt}}}<extra></extra>",
        showlegend=False,
    )


def heatmap_figure(grid: MetricGrid, selected: str | None, metric: GridMetric | None = None) -> go.Figure:
    """The metric over (layer × kind), with an invisible point per cell so a click selects it.

    Plotly's heatmap traces send no selection events to Streamlit, so each cell carries a
    transparent marker (with the module name as ``customdata``) that does.

    Args:
        grid: the values.
        selected: the module outlined in red.
        metric: how to label and colour it (default: ``GRID_METRICS[grid.metric]``).
    """
    metric = metric or GRID_METRICS[grid.metric]
    unit = metric.unit or ("fraction<br>of full rank" if metric.fraction else "count")
    colorbar = {"title": {"text": unit}, "thickness": 14}
    low, high = metric.color_range or (None, None)
    heat = go.Heatmap(z=grid.values, x=grid.kinds, y=grid.layers, colorscale="Viridis", hoverinfo="skip",
                      colorbar=colorbar, zmin=low, zmax=high)  # fmt: skip
    fig = go.Figure([heat, _cell_markers(grid, metric)])
    where = np.argwhere(grid.names == selected)
    if len(where):
        i, j = where[0]
        outline = {"symbol": "square-open", "size": 18, "color": "red", "line": {"width": 3}}
        fig.add_trace(go.Scatter(x=[grid.kinds[j]], y=[grid.layers[i]], mode="markers", hoverinfo="skip",
                                 marker=outline, showlegend=False))  # fmt: skip
    # Layer 0 on top, with an explicit range: the click markers would pad an automatic one.
    fig.update_yaxes(title_text="layer", range=[grid.layers[-1] + 0.5, grid.layers[0] - 0.5],
                     dtick=1 if len(grid.layers) <= 12 else 2)  # fmt: skip
    fig.update_xaxes(title_text="matrix kind", type="category")
    fig.update_layout(height=max(320, 18 * len(grid.layers) + 140), margin={"t": 30, "b": 40, "l": 60, "r": 10},
                      hovermode="closest", hoverdistance=-1, clickmode="event+select", dragmode=False,
                      title={"text": metric.label, "font": {"size": 13}})  # fmt: skip
    return fig


def whitened_figure(plain: LayerSpectrum, whitened: LayerSpectrum) -> go.Figure:
    """One matrix's spectrum beside its whitened one (W·S, S from calibration inputs), both / σ₁.

    Whitening weighs each input direction by how much the calibration text uses it, so a
    whitened spectrum that falls faster than the plain one means the output error of a
    truncation is smaller than the weight error suggests.
    """
    titles = ("σᵢ / σ₁ (log)", "Cumulative energy Σ<sub>j≤i</sub> σ<sub>j</sub>² / Σ σ<sub>j</sub>²")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09, subplot_titles=titles)
    x = np.arange(1, plain.full_rank + 1)
    for sp, label, color in (
        (plain, "W (plain)", qualitative.Plotly[0]),
        (whitened, "W·S (whitened)", qualitative.Plotly[1]),
    ):
        values = sp.s / sp.s[0] if sp.s[0] > 0 else sp.s
        hover = f"{label}<br>i=%{{x}}<br>%{{y:.4g}}<extra></extra>"
        line = {"color": color, "width": 2}
        fig.add_trace(
            go.Scatter(x=x, y=values, name=label, line=line, hovertemplate=hover, legendgroup=label), row=1, col=1
        )
        fig.add_trace(go.Scatter(x=x, y=sp.cumulative_energy(), showlegend=False, line=line, hovertemplate=hover,
                                 legendgroup=label), row=1, col=2)  # fmt: skip
    fig.update_xaxes(title_text="index i (rank)")
    scaled = [sp.s[sp.s > 0] / sp.s[0] for sp in (plain, whitened) if sp.s[0] > 0]
    lo = min((float(v.min()) for v in scaled if v.size), default=1.0)
    tickvals, ticktext = log_ticks(lo, 1.0)
    fig.update_yaxes(type="log", tickvals=tickvals, ticktext=ticktext, title_text="σᵢ / σ₁ (log)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction of energy kept by rank i", row=1, col=2)
    fig.update_layout(height=380, margin={"t": 40, "b": 40, "l": 60, "r": 10}, hovermode="closest",
                      title={"text": plain.name, "font": {"size": 13}})  # fmt: skip
    return fig
