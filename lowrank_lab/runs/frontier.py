"""What the stored runs say together: the measured frontier, and how well predictions did.

- The measured frontier: perplexity against parameters kept, one point per compression; a run
  is on the Pareto front when no other run keeps no more parameters with a lower perplexity.
- Prediction scores: Spearman's rank correlation (does the prediction order plans right?) and
  Pearson's on log perplexity, over runs that recorded a prediction before they measured.
- The loss fit: :func:`lowrank_lab.prediction.fit_loss` on those runs, which turns the raw
  second-order estimate into a calibrated prediction for the next plans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lowrank_lab.prediction import LossFit, fit_loss
from lowrank_lab.runs.records import RunRow

PREDICTED_METHOD = "whitened"  # predictions price whitened truncation; other methods are not predicted


def measured(rows: Iterable[RunRow]) -> list[RunRow]:
    """Compressions with a measured perplexity and a parameter count: the frontier's points."""
    return [
        r for r in rows
        if r.kind == "compression" and r.perplexity is not None and r.linear_kept is not None
    ]  # fmt: skip


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (smaller x, smaller y), by increasing x.

    Args:
        points: (parameters kept, perplexity) pairs.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


@dataclass(frozen=True)
class PredictionScore:
    """How predicted perplexity compares with measured perplexity over runs.

    Attributes:
        runs: how many runs had both.
        spearman: rank correlation (None under 3 runs or when either side is constant).
        pearson_log: correlation of log perplexities (same conditions).
        median_ratio: median of measured / predicted.
    """

    runs: int
    spearman: float | None
    pearson_log: float | None
    median_ratio: float | None


def predicted_pairs(rows: Iterable[RunRow]) -> list[RunRow]:
    """Whitened compressions that recorded a prediction and measured a perplexity."""
    return [
        r for r in rows
        if r.kind == "compression" and r.method == PREDICTED_METHOD
        and r.predicted_perplexity is not None and r.perplexity is not None
    ]  # fmt: skip


def score(predicted: Sequence[float], measured_: Sequence[float]) -> PredictionScore:
    """Correlations of predicted and measured perplexities (matched by position)."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured_, dtype=float)
    n = len(p)
    if n == 0:
        return PredictionScore(0, None, None, None)
    ratio = float(np.median(m / p))
    if n < 3 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return PredictionScore(n, None, None, ratio)
    from scipy import stats  # heavy: imported on first use, not with lowrank_lab

    rho = float(stats.spearmanr(p, m).statistic)
    r = float(np.corrcoef(np.log(p), np.log(m))[0, 1])
    return PredictionScore(n, rho, r, ratio)


def score_runs(rows: Iterable[RunRow]) -> PredictionScore:
    pairs = predicted_pairs(rows)
    return score([r.predicted_perplexity for r in pairs], [r.perplexity for r in pairs])


def fit_from_runs(rows: Iterable[RunRow], model: str | None = None) -> LossFit:
    """The loss fit over whitened compressions (of ``model``) that recorded a prediction.

    It maps the anchored estimate (:meth:`lowrank_lab.prediction.PredictionBasis.anchored`); a run
    recorded before predictions were anchored gives its raw one.
    """
    raw, increase = [], []
    for r in rows:
        if r.kind != "compression" or r.method != PREDICTED_METHOD or (model is not None and r.model != model):
            continue
        if r.predicted_loss_raw is None or r.perplexity is None or not r.perplexity_dense:
            continue
        raw.append(r.predicted_loss_anchored if r.predicted_loss_anchored is not None else r.predicted_loss_raw)
        increase.append(math.log(r.perplexity / r.perplexity_dense))
    return fit_loss(raw, increase)
