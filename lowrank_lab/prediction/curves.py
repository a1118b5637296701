"""Predicted perplexity against parameters kept: the best plan for each size, and the uniform plans.

The best plan for a size minimises the predicted loss Σ (cost of dropped components) for its
parameters; sweeping the price λ of a parameter, each matrix takes the option (a rank below
break-even, or dense) minimising Σ_{i>r} cᵢ + λ · params(r) — the ``auto`` allocator's
Lagrangian, here over the whole range of sizes at once. Both curves go through
:meth:`PredictionBasis.anchored` and the fit, as a plan's prediction does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowrank_lab.prediction.basis import PredictionBasis


@dataclass(frozen=True, eq=False)
class PredictedCurve:
    """Predicted perplexity of a family of plans.

    Attributes:
        label: ``best`` (the Lagrangian plans) or ``uniform``.
        linear_kept: linear-layer parameters kept, as a fraction, shape (p,), increasing.
        perplexity, low, high: the prediction and its band, shape (p,).
    """

    label: str
    linear_kept: np.ndarray
    perplexity: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _options(basis: PredictionBasis, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(parameters, dropped cost) of matrix i's options: ranks 1..below break-even, then dense."""
    m, n = basis.shapes[i]
    top = min(int(basis.break_even[i]) - 1, int(basis.full_ranks[i]))
    ranks = np.arange(1, top + 1)
    start = basis.offsets[i]
    params = np.concatenate([ranks * (m + n), [m * n]]).astype(np.float64)
    cost = np.concatenate([basis.cost_tail[start + ranks], [0.0]])
    return params, cost


def best_curve(basis: PredictionBasis, n_points: int = 40) -> PredictedCurve | None:
    """The lowest predicted perplexity for each size (None without loss costs or a dense perplexity)."""
    if basis.cost_tail is None or basis.dense_perplexity is None or not basis.names:
        return None
    options = [_options(basis, i) for i in range(len(basis.names))]
    biggest = max(float(c.max()) / max(float(p.min()), 1.0) for p, c in options) or 1.0
    prices = np.concatenate([[0.0], np.geomspace(biggest * 1e-9, biggest * 10, n_points - 1)])  # (p,)
    params = np.zeros(len(prices))
    cost = np.zeros(len(prices))
    for p, c in options:
        pick = np.argmin(c[None, :] + prices[:, None] * p[None, :], axis=1)  # (prices,)
        params += p[pick]
        cost += c[pick]
    dense = float(sum(p[-1] for p, _ in options))
    return _curve(basis, "best", params / dense, basis.scale * cost)


def uniform_curve(basis: PredictionBasis, keeps: np.ndarray | None = None) -> PredictedCurve | None:
    """Predicted perplexity of the uniform plans (every matrix keeps the same fraction)."""
    if basis.cost_tail is None or basis.dense_perplexity is None or not basis.names:
        return None
    keeps = np.linspace(0.05, 1.0, 20) if keeps is None else np.asarray(keeps, dtype=float)
    kept, raw = basis.uniform_plans(keeps)
    return _curve(basis, "uniform", kept, raw)


def _curve(basis: PredictionBasis, label: str, kept: np.ndarray, raw: np.ndarray) -> PredictedCurve:
    order = np.argsort(kept, kind="stable")
    kept, raw = kept[order], raw[order]
    bands = np.array([basis.fit.loss_increase(d) for d in basis.anchored(raw, kept)])  # (p, 3)
    ppl = basis.dense_perplexity * np.exp(np.minimum(bands, 700.0))
    return PredictedCurve(label, kept, ppl[:, 0], ppl[:, 1], ppl[:, 2])
