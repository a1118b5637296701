"""The LoRA page's loss chart: training loss per step and validation loss when measured."""

from __future__ import annotations

import math

import plotly.graph_objects as go

TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#d62728"


def loss_spec(losses: list[tuple[int, float]], val_losses: list[tuple[int, float]], total_steps: int) -> dict:
    """Training and validation loss against step, as a plotly figure dict.

    Args:
        losses: ``(step, loss)`` per training step.
        val_losses: ``(step, loss)`` where validation was measured (step 0: before training).
        total_steps: the x axis runs to this step.
    """
    return {
        "data": [
            {
                "type": "scatter",
                # Markers while there are few points: one step alone draws no line.
                "mode": "lines+markers" if len(losses) <= 40 else "lines",
                "marker": {"size": 5},
                "x": [s for s, _ in losses],
                "y": [v for _, v in losses],
                "name": "training loss",
                "line": {"color": TRAIN_COLOR},
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": [s for s, _ in val_losses],
                "y": [v for _, v in val_losses],
                "name": "validation loss",
                "line": {"color": VAL_COLOR},
            },
        ],
        "layout": {
            "title": {"text": "Loss (mean next-token cross-entropy)", "font": {"size": 13}},
            # A little room at both ends, so the markers at step 0 and the last step show whole;
            # whole-number ticks only (steps are counted, never halved).
            "xaxis": {
                "title": {"text": "step"},
                "range": [-0.03 * max(total_steps, 1), 1.03 * max(total_steps, 1)],
                "tick0": 0,
                "dtick": max(1, _nice_step(total_steps / 8)),
            },
            "yaxis": {"title": {"text": "loss"}},
            "height": 320,
            "margin": {"t": 40, "b": 40, "l": 60, "r": 10},
            "legend": {"x": 1.02, "y": 1, "xanchor": "left"},
        },
    }


def _nice_step(raw: float) -> int:
    """The 1-2-5 step at or above ``raw`` (for about eight ticks), at least 1."""
    if raw <= 1:
        return 1
    base = 10 ** math.floor(math.log10(raw))
    return int(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


def loss_figure(losses, val_losses, total_steps: int) -> go.Figure:
    return go.Figure(loss_spec(losses, val_losses, total_steps))
