"""Figures of the Ranks page: one matrix's error against rank, and the whole-model trade-off.

Both are redrawn on every slider move, so they are written as plain plotly dicts and wrapped
without plotly's per-property validation, which costs several times more than the rest of the
drawing (``bench/slider.py`` measures both). The tests build the same dicts with validation on,
so a bad property cannot hide.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lowrank_lab.plan.curves import ErrorCurve, TradeoffCurve

# The legend's words for each swept family of plans (keyed by TradeoffCurve.label).
CURVE_LABELS = {
    "keep-params": "keep a fraction of each matrix's parameters",
    "keep-energy": "keep a fraction of each matrix's energy",
    "fixed-rank": "same rank everywhere",
    "best": "best for the size (energy per parameter)",
}
FRO_COLOR, SPECTRAL_COLOR, PLAN_COLOR, WHITENED_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"
# The plan is red everywhere; the families get colors that cannot be mistaken for it.
CURVE_COLORS = {"keep-params": "#1f77b4", "keep-energy": "#2ca02c", "fixed-rank": "#9467bd", "best": "#7f7f7f"}
_MARGIN = {"t": 40, "b": 40, "l": 60, "r": 10}
_LEGEND_RIGHT = {"x": 1.02, "y": 1, "xanchor": "left"}


def fast_figure(spec: dict) -> go.Figure:
    """A figure from a plain dict, skipping validation (the tests validate the same dicts)."""
    try:
        return go.Figure(spec, _validate=False)
    except TypeError:  # a plotly without the private switch: validate, slower but the same figure
        return go.Figure(spec)


def _line(x, y, name: str, color: str, **extra) -> dict:
    return {"type": "scatter", "x": x, "y": y, "name": name, "line": {"color": color}, **extra}


def _vertical(kind: str, x0: float, x1: float, **style) -> dict:
    """A shape spanning the plot's height between x0 and x1 (data units)."""
    return {"type": kind, "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1, **style}


def _layout(title: str, x_title: str, x_range: list, y_title: str, height: int, **extra) -> dict:
    return {
        "title": {"text": title, "font": {"size": 13}},
        "xaxis": {"title": {"text": x_title}, "range": x_range},
        "yaxis": {"title": {"text": y_title}, "range": [0, 1.05]},
        "height": height,
        "margin": _MARGIN,
        "legend": _LEGEND_RIGHT,
        **extra,
    }


def error_rank_spec(curve: ErrorCurve, rank: int | None, title: str, whitened: np.ndarray | None = None) -> dict:
    """Relative Frobenius and spectral error against rank, the chosen rank marked (a plotly dict).

    Args:
        curve: the matrix's :class:`ErrorCurve`.
        rank: the rank the plan keeps, or None when the matrix stays dense.
        title: the matrix's name.
        whitened: the activation-aware error ‖(W−W_r)X‖/‖WX‖ at ranks 1..full rank, shape (k,),
            once the model is calibrated: drawn beside the plain error.
    """
    full = int(curve.ranks[-1])
    hover = {
        "customdata": curve.params_fraction,
        "hovertemplate": "r=%{x}<br>%{y:.4f}<br>keeps %{customdata:.0%} of its parameters<extra></extra>",
    }
    data = [
        _line(curve.ranks, curve.rel_frobenius, "‖W−W<sub>r</sub>‖<sub>F</sub> / ‖W‖<sub>F</sub>", FRO_COLOR, **hover),
        _line(curve.ranks, curve.spectral, "σ<sub>r+1</sub> / σ<sub>1</sub> (spectral)", SPECTRAL_COLOR, **hover),
    ]
    if whitened is not None:
        label = "‖(W−W<sub>r</sub>)X‖ / ‖WX‖ (whitened)"
        data.append({**_line(curve.ranks, whitened, label, WHITENED_COLOR, **hover),
                     "line": {"color": WHITENED_COLOR, "dash": "dash"}})  # fmt: skip
    shapes = [
        _vertical("rect", curve.break_even, full, fillcolor="gray", opacity=0.15, line={"width": 0}, layer="below")
    ]
    dense_note = {"x": (curve.break_even + full) / 2, "y": 1.0, "xref": "x", "yref": "paper", "showarrow": False,
                  "text": f"dense from r={curve.break_even}", "font": {"size": 11, "color": "gray"}}  # fmt: skip
    if rank is not None:
        shapes.append(_vertical("line", rank, rank, line={"color": PLAN_COLOR, "width": 2, "dash": "dash"}))
        errors = [curve.rel_frobenius[rank - 1], curve.spectral[rank - 1]]
        if whitened is not None:
            errors.append(whitened[rank - 1])
        data.append({"type": "scatter", "x": [rank] * len(errors), "y": errors, "mode": "markers", "name": f"plan: r={rank}",
                     "marker": {"color": PLAN_COLOR, "size": 9},
                     "hovertemplate": "r=%{x}: %{y:.4f}<extra>plan</extra>"})  # fmt: skip
    heading = f"Error against rank: {title}" + ("" if rank else " (plan keeps it dense)")
    layout = _layout(heading, "rank r", [0, full + 1], "relative error", 340, shapes=shapes, annotations=[dense_note])
    return {"data": data, "layout": layout}


def tradeoff_spec(curves: list[TradeoffCurve], point: tuple[float, float]) -> dict:
    """Parameters kept (% of linear layers) against weighted error, per plan family and for the plan.

    Args:
        curves: from :func:`lowrank_lab.plan.curves.tradeoff_curves`.
        point: the current plan's (fraction kept, weighted error).
    """
    hover = "%{x:.1f}% kept, error %{y:.4f}<br>setting %{customdata:.4g}<extra></extra>"
    data = [
        {**_line(100 * c.linear_kept, c.weighted_error, CURVE_LABELS.get(c.label, c.label),
                 CURVE_COLORS.get(c.label, "#8c564b"), mode="lines+markers", marker={"size": 4},
                 customdata=c.settings, hovertemplate=hover),
         "line": {"color": CURVE_COLORS.get(c.label, "#8c564b"), "dash": "dot" if c.label == "best" else "solid"}}
        for c in curves
    ]  # fmt: skip
    data.append({"type": "scatter", "x": [100 * point[0]], "y": [point[1]], "mode": "markers", "name": "current plan",
                 "marker": {"symbol": "star", "size": 16, "color": PLAN_COLOR, "line": {"width": 1, "color": "black"}},
                 "hovertemplate": "current plan: %{x:.1f}% kept, error %{y:.4f}<extra></extra>"})  # fmt: skip
    layout = _layout("Whole model: size against error", "parameters kept, % of linear layers", [0, 101],
                     "weighted relative Frobenius error", 380)  # fmt: skip
    layout["legend"] = {**_LEGEND_RIGHT, "title": {"text": "plans swept"}}
    return {"data": data, "layout": layout}


def error_rank_figure(curve: ErrorCurve, rank: int | None, title: str, whitened: np.ndarray | None = None) -> go.Figure:
    return fast_figure(error_rank_spec(curve, rank, title, whitened))


def tradeoff_figure(curves: list[TradeoffCurve], point: tuple[float, float]) -> go.Figure:
    return fast_figure(tradeoff_spec(curves, point))
