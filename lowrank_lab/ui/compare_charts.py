"""Figures of the Compare page: one matrix's spectra in both models with the spectrum of its change."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from lowrank_lab.spectra.delta import MatrixDelta


def pair_figure(d: MatrixDelta, s_base: np.ndarray, s_tuned: np.ndarray, base: str, tuned: str) -> go.Figure:
    """σᵢ of W₁, W₂ and ΔW on a log scale (left), ΔW's cumulative energy (right).

    Args:
        d: the matrix's change.
        s_base, s_tuned: the singular values of the matrix in each model, shape (k,).
        base, tuned: the models' names for the legend.
    """
    titles = ("Singular values σᵢ (log)", "Cumulative energy of the change ΔW")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09, subplot_titles=titles)
    x = np.arange(1, d.spectrum.full_rank + 1)
    s_delta = d.spectrum.s
    shown = s_delta > 0  # a log axis cannot draw exact zeros
    traces = (
        (s_base, f"W₁ ({base})", qualitative.Plotly[0], np.ones_like(s_base, dtype=bool), "solid"),
        (s_tuned, f"W₂ ({tuned})", qualitative.Plotly[1], np.ones_like(s_tuned, dtype=bool), "dash"),
        (s_delta, "ΔW = W₂ − W₁", qualitative.Plotly[2], shown, "solid"),
    )
    for s, name, color, keep, dash in traces:
        fig.add_trace(go.Scatter(x=x[keep], y=s[keep], name=name, mode="lines", line={"color": color, "width": 2,
                                 "dash": dash}, hovertemplate=f"{name}<br>i=%{{x}}<br>σ %{{y:.4g}}<extra></extra>"),
                      row=1, col=1)  # fmt: skip
    if d.changed:
        fig.add_vline(x=max(d.rank, 1), line={"color": qualitative.Plotly[2], "width": 1, "dash": "dot"}, row=1,
                      col=1, annotation_text=f"rank of ΔW = {d.rank}", annotation_position="top right")  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=d.spectrum.cumulative_energy(), showlegend=False, mode="lines",
                                 line={"color": qualitative.Plotly[2], "width": 2},
                                 hovertemplate="rank %{x}<br>%{y:.4f} of ΔW's energy<extra></extra>"), row=1, col=2)  # fmt: skip
    for level in (0.9, 0.99):
        fig.add_hline(y=level, line={"color": "gray", "width": 1, "dash": "dot"}, row=1, col=2,
                      annotation_text=f"{level:.0%}", annotation_position="bottom right")  # fmt: skip
    fig.update_xaxes(title_text="index i (rank)")
    fig.update_yaxes(type="log", exponentformat="power", title_text="σᵢ (log)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="fraction of ΔW's energy kept by rank i", row=1, col=2)
    fig.update_layout(height=420, margin={"t": 40, "b": 40, "l": 60, "r": 10}, hovermode="closest",
                      legend={"font": {"size": 10}}, title={"text": d.name, "font": {"size": 13}})  # fmt: skip
    fig.update_annotations(font_size=12)
    return fig
