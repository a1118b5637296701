"""Figures of the Ranks page: one matrix's error against rank, and the whole-model trade-off.

Both are redrawn on every slider move, so they are written as plain plotly dicts and wrapped
without plotly's per-property validation, which costs ten times more than everything else in
a rerun. The tests build the same dicts with validation on, so a bad property cannot hide.
"""

from __future__ import annotations

import plotly.graph_objects as go

from lowrank_lab.plan_views import CURVE_LABELS, ErrorCurve, TradeoffCurve

FRO_COLOR, SPECTRAL_COLOR, PLAN_COLOR = "#1f77b4", "#ff7f0e", "#d62728"
# The plan is red everywhere; the families get colors that cannot be mistaken for it.
CURVE_COLORS = {"keep-params": "#1f77b4", "keep-energy": "#2ca02c", "fixed-rank": "#9467bd", "best": "#7f7f7f"}
_MARGIN = {"t": 40, "b": 40, "l": 60, "r": 10}


def fast_figure(spec: dict) -> go.Figure:
    """A figure from a plain dict, skipping validation (the tests validate the same dicts)."""
    try:
        return go.Figure(spec, _validate=False)
    except TypeError:  # a plotly without the private switch: validate, slower but the same figure
        return go.Figure(spec)


def error_rank_spec(curve: ErrorCurve, rank: int | None, title: str) -> dict:
    """Relative Frobenius and spectral error against rank, the chosen rank marked (a plotly dict).

    Args:
        curve: the matrix's :class:`ErrorCurve`.
        rank: the rank the plan keeps, or None when the matrix stays dense.
        title: the matrix's name.
    """
    full = int(curve.ranks[-1])
    hover = "r=%{x}<br>%{y:.4f}<br>keeps %{customdata:.0%} of its parameters<extra></extra>"
    data = [
        {
            "type": "scatter",
            "x": curve.ranks,
            "y": curve.rel_frobenius,
            "name": "‖W−W<sub>r</sub>‖<sub>F</sub> / ‖W‖<sub>F</sub>",
            "line": {"color": FRO_COLOR},
            "customdata": curve.params_fraction,
            "hovertemplate": hover,
        },
        {
            "type": "scatter",
            "x": curve.ranks,
            "y": curve.spectral,
            "name": "σ<sub>r+1</sub> / σ<sub>1</sub> (spectral)",
            "line": {"color": SPECTRAL_COLOR},
            "customdata": curve.params_fraction,
            "hovertemplate": hover,
        },
    ]
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": curve.break_even,
            "x1": full,
            "y0": 0,
            "y1": 1,
            "fillcolor": "gray",
            "opacity": 0.15,
            "line": {"width": 0},
            "layer": "below",
        }
    ]
    annotations = [
        {
            "x": (curve.break_even + full) / 2,
            "y": 1.0,
            "xref": "x",
            "yref": "paper",
            "showarrow": False,
            "text": f"dense from r={curve.break_even}",
            "font": {"size": 11, "color": "gray"},
        }
    ]
    if rank is not None:
        i = rank - 1
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": rank,
                "x1": rank,
                "y0": 0,
                "y1": 1,
                "line": {"color": PLAN_COLOR, "width": 2, "dash": "dash"},
            }
        )
        data.append(
            {
                "type": "scatter",
                "x": [rank, rank],
                "y": [curve.rel_frobenius[i], curve.spectral[i]],
                "mode": "markers",
                "marker": {"color": PLAN_COLOR, "size": 9},
                "name": f"plan: r={rank}",
                "hovertemplate": "r=%{x}: %{y:.4f}<extra>plan</extra>",
            }
        )
    layout = {
        "title": {
            "text": f"Error against rank: {title}" + ("" if rank else " (plan keeps it dense)"),
            "font": {"size": 13},
        },
        "xaxis": {"title": {"text": "rank r"}, "range": [0, full + 1]},
        "yaxis": {"title": {"text": "relative error"}, "range": [0, 1.05]},
        "shapes": shapes,
        "annotations": annotations,
        "height": 340,
        "margin": _MARGIN,
        "legend": {"x": 1.02, "y": 1, "xanchor": "left"},
        "hovermode": "x",
    }
    return {"data": data, "layout": layout}


def tradeoff_spec(curves: list[TradeoffCurve], point: tuple[float, float]) -> dict:
    """Parameters kept (% of linear layers) against weighted error, per preset family and for the plan.

    Args:
        curves: from :func:`lowrank_lab.plan_views.tradeoff_curves`.
        point: the current plan's (fraction kept, weighted error).
    """
    data = [
        {
            "type": "scatter",
            "x": 100 * c.linear_kept,
            "y": c.weighted_error,
            "mode": "lines+markers",
            "marker": {"size": 4},
            "name": CURVE_LABELS.get(c.label, c.label),
            "line": {"dash": "dot" if c.label == "best" else "solid", "color": CURVE_COLORS.get(c.label, "#8c564b")},
            "customdata": c.settings,
            "hovertemplate": "%{x:.1f}% kept, error %{y:.4f}<br>setting %{customdata:.4g}<extra></extra>",
        }
        for c in curves
    ]
    data.append(
        {
            "type": "scatter",
            "x": [100 * point[0]],
            "y": [point[1]],
            "mode": "markers",
            "name": "current plan",
            "marker": {"symbol": "star", "size": 16, "color": PLAN_COLOR, "line": {"width": 1, "color": "black"}},
            "hovertemplate": "current plan: %{x:.1f}% kept, error %{y:.4f}<extra></extra>",
        }
    )
    layout = {
        "title": {"text": "Whole model: size against error", "font": {"size": 13}},
        "xaxis": {"title": {"text": "parameters kept, % of linear layers"}, "range": [0, 101]},
        "yaxis": {"title": {"text": "weighted relative Frobenius error"}, "range": [0, 1.02]},
        "height": 380,
        "margin": _MARGIN,
        "legend": {"x": 1.02, "y": 1, "xanchor": "left", "title": {"text": "plans swept"}},
    }
    return {"data": data, "layout": layout}


def error_rank_figure(curve: ErrorCurve, rank: int | None, title: str) -> go.Figure:
    return fast_figure(error_rank_spec(curve, rank, title))


def tradeoff_figure(curves: list[TradeoffCurve], point: tuple[float, float]) -> go.Figure:
    return fast_figure(tradeoff_spec(curves, point))
