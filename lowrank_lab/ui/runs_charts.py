"""Figures of the Runs page: the measured frontier beside the predicted curve, and predicted against measured.

Plain plotly dicts (validated in the tests), like the Ranks page's charts.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative

from lowrank_lab.prediction.curves import PredictedCurve
from lowrank_lab.runs.frontier import PredictionScore, measured, pareto_front, predicted_pairs
from lowrank_lab.runs.records import RunRow
from lowrank_lab.ui.rank_charts import fast_figure

_MARGIN = {"t": 50, "b": 40, "l": 60, "r": 10}  # the frontier's legend sits below its axis
FRONT_COLOR, PREDICTED_COLOR = "#222222", "#7f7f7f"


def group_of(row: RunRow) -> str:
    """What a point is coloured by: method and where the ranks came from."""
    return f"{row.method} · {row.allocation}"


def _hover(row: RunRow) -> str:
    predicted = f"<br>predicted {row.predicted_perplexity:.2f}" if row.predicted_perplexity is not None else ""
    return (
        f"run #{row.id}: {group_of(row)}<br>{100 * row.linear_kept:.1f}% of linear parameters kept"
        f"<br>perplexity {row.perplexity:.2f}{predicted}"
    )


def frontier_spec(rows: list[RunRow], curves: list[PredictedCurve], dense: float | None) -> dict:
    """Measured perplexity against linear parameters kept, one point per compression, the Pareto front,
    and the predicted curves (with their band) when the model is calibrated.

    Args:
        rows: runs of one model (those without a measured perplexity are left out).
        curves: predicted curves (best plans, uniform plans), possibly empty.
        dense: the dense model's perplexity, drawn as a horizontal line.
    """
    points = measured(rows)
    groups = list(dict.fromkeys(group_of(r) for r in points))
    palette = qualitative.Plotly
    data = []
    for curve in curves:
        x = [100 * k for k in curve.linear_kept]
        name = "predicted: best plan for the size" if curve.label == "best" else f"predicted: {curve.label} plans"
        dash = "dash" if curve.label == "best" else "dot"
        data.append({"type": "scatter", "x": x + x[::-1], "y": list(curve.high) + list(curve.low)[::-1],
                     "fill": "toself", "fillcolor": "rgba(127,127,127,0.12)", "line": {"width": 0},
                     "hoverinfo": "skip", "showlegend": False, "legendgroup": name})  # fmt: skip
        data.append({"type": "scatter", "x": x, "y": list(curve.perplexity), "name": name, "legendgroup": name,
                     "line": {"color": PREDICTED_COLOR, "dash": dash},
                     "hovertemplate": "%{x:.1f}% kept: predicted %{y:.2f}<extra></extra>"})  # fmt: skip
    for i, group in enumerate(groups):
        mine = [r for r in points if group_of(r) == group]
        data.append({"type": "scatter", "mode": "markers", "name": group, "x": [100 * r.linear_kept for r in mine],
                     "y": [r.perplexity for r in mine], "text": [_hover(r) for r in mine],
                     "marker": {"size": 10, "color": palette[i % len(palette)], "line": {"width": 1, "color": "white"}},
                     "hovertemplate": "%{text}<extra></extra>"})  # fmt: skip
    front = [points[i] for i in pareto_front([(r.linear_kept, r.perplexity) for r in points])]
    if front:
        data.append({"type": "scatter", "mode": "lines", "name": "Pareto front (measured)", "line": {"color": FRONT_COLOR,
                     "shape": "hv", "width": 1.5}, "x": [100 * r.linear_kept for r in front],
                     "y": [r.perplexity for r in front], "hoverinfo": "skip"})  # fmt: skip
    shapes = []
    if dense:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": dense, "y1": dense,
                       "line": {"color": "gray", "dash": "dot", "width": 1}})  # fmt: skip
    layout = {
        "title": {"text": "Measured frontier: perplexity against size" + (" (gray: predicted)" if curves else ""),
                  "font": {"size": 13}},
        "xaxis": {"title": {"text": "parameters kept, % of linear layers"}, "range": [0, 101]},
        "yaxis": {"title": {"text": "perplexity (log)"}, "type": "log"},
        "height": 460, "margin": _MARGIN, "shapes": shapes,
        "legend": {"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"},
    }  # fmt: skip
    return {"data": data, "layout": layout}


def _title(score: PredictionScore) -> str:
    if score.spearman is None:
        return f"Predicted against measured ({score.runs} run{'s' if score.runs != 1 else ''}: too few to correlate)"
    return (
        f"Predicted against measured: Spearman ρ = {score.spearman:.2f}, Pearson r (log) = {score.pearson_log:.2f}, "
        f"{score.runs} runs"
    )


def prediction_spec(rows: list[RunRow], score: PredictionScore) -> dict:
    """Predicted perplexity (with its range) against measured, log–log, with the line where they agree."""
    pairs = predicted_pairs(rows)
    data = []
    if pairs:
        lo = min(min(r.predicted_low or r.predicted_perplexity, r.perplexity) for r in pairs)
        hi = max(max(r.predicted_high or r.predicted_perplexity, r.perplexity) for r in pairs)
        lo, hi = lo / 1.2, hi * 1.2
        data.append({"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi], "name": "predicted = measured",
                     "line": {"color": "gray", "dash": "dot"}, "hoverinfo": "skip"})  # fmt: skip
        data.append({
            "type": "scatter", "mode": "markers", "name": "whitened compressions",
            "x": [r.predicted_perplexity for r in pairs], "y": [r.perplexity for r in pairs],
            "error_x": {"type": "data", "symmetric": False,
                        "array": [(r.predicted_high or r.predicted_perplexity) - r.predicted_perplexity for r in pairs],
                        "arrayminus": [r.predicted_perplexity - (r.predicted_low or r.predicted_perplexity)
                                       for r in pairs], "color": "#aaaaaa"},
            "text": [f"run #{r.id}: {r.allocation}, {100 * (r.linear_kept or 0):.0f}% kept" for r in pairs],
            "marker": {"size": 9, "color": "#1f77b4"},
            "hovertemplate": "%{text}<br>predicted %{x:.2f}, measured %{y:.2f}<extra></extra>",
        })  # fmt: skip
    axis = {"type": "log"}
    if pairs:
        axis["range"] = [math.log10(lo), math.log10(hi)]
    layout = {
        "title": {"text": _title(score), "font": {"size": 13}},
        "xaxis": {**axis, "title": {"text": "predicted perplexity (recorded before measuring)"}},
        "yaxis": {**axis, "title": {"text": "measured perplexity"}},
        "height": 460, "margin": _MARGIN, "showlegend": False,
    }  # fmt: skip
    return {"data": data, "layout": layout}


def frontier_figure(rows: list[RunRow], curves: list[PredictedCurve], dense: float | None) -> go.Figure:
    return fast_figure(frontier_spec(rows, curves, dense))


def prediction_figure(rows: list[RunRow], score: PredictionScore) -> go.Figure:
    return fast_figure(prediction_spec(rows, score))
