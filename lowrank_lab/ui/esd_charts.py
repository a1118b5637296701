"""The ESD chart: a log–log histogram of one matrix's eigenvalues with its power-law fit and Marchenko–Pastur density."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from lowrank_lab.spectra.esd import EsdView


def esd_figure(view: EsdView, name: str) -> go.Figure:
    """Histogram bars of λ = σ² on log–log axes, the fitted tail (from x_min) and the random-matrix density.

    Args:
        view: what :func:`lowrank_lab.spectra.esd.esd_view` computed.
        name: the matrix, for the title.
    """
    m = view.metrics
    shown = view.density > 0  # a log axis cannot draw an empty bin
    centers = view.centers
    widths = np.diff(np.log10(view.edges))
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=np.log10(centers[shown]),
            y=view.density[shown],
            width=widths[shown],
            name=f"eigenvalues λ = σ² ({view.n_evals})",
            marker={"color": qualitative.Plotly[0], "line": {"width": 0}},
            opacity=0.6,
            customdata=np.stack([view.edges[:-1][shown], view.edges[1:][shown]], axis=-1),
            hovertemplate="λ %{customdata[0]:.3g}–%{customdata[1]:.3g}<br>density %{y:.3g}<extra></extra>",
        )
    )
    if view.power_law_x.size:
        fig.add_trace(
            go.Scatter(
                x=np.log10(view.power_law_x),
                y=view.power_law_y,
                mode="lines",
                name=f"power law α = {m.alpha:.2f} (from x_min = {m.xmin:.3g}, {m.n_tail} values)",
                line={"color": qualitative.Plotly[1], "width": 3},
                hovertemplate="λ %{customdata:.3g}<br>%{y:.3g}<extra>power law</extra>",
                customdata=view.power_law_x,
            )
        )
        fig.add_vline(x=float(np.log10(m.xmin)), line={"color": qualitative.Plotly[1], "width": 1, "dash": "dot"})
    if view.mp_x.size:
        fig.add_trace(
            go.Scatter(
                x=np.log10(view.mp_x),
                y=view.mp_y,
                mode="lines",
                name="Marchenko–Pastur (random, same shape and variance)",
                line={"color": qualitative.Plotly[2], "width": 2, "dash": "dash"},
                hovertemplate="λ %{customdata:.3g}<br>%{y:.3g}<extra>Marchenko–Pastur</extra>",
                customdata=view.mp_x,
            )
        )
    # Bars need a linear x axis, so x is log₁₀ λ with the ticks labelled as λ.
    lo, hi = np.log10(view.edges[0]), np.log10(view.edges[-1])
    if view.mp_x.size:
        lo, hi = min(lo, float(np.log10(view.mp_x[0]))), max(hi, float(np.log10(view.mp_x[-1])))
    ticks = np.arange(np.floor(lo), np.ceil(hi) + 1)
    fig.update_xaxes(title_text="eigenvalue λ = σ² (log)", tickvals=ticks, ticktext=[f"1e{int(t)}" for t in ticks])
    fig.update_yaxes(type="log", exponentformat="power", title_text="density (log)")
    fig.update_layout(height=400, margin={"t": 40, "b": 40, "l": 60, "r": 10}, bargap=0, hovermode="closest",
                      legend={"font": {"size": 10}, "yanchor": "top", "y": 0.99, "xanchor": "left", "x": 0.01},
                      title={"text": f"Empirical spectral density of {name}", "font": {"size": 13}})  # fmt: skip
    return fig
