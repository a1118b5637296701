"""Per-matrix sums that predict a plan's activation-aware error and loss with a lookup per matrix.

See :mod:`lowrank_lab.prediction` for the mathematics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lowrank_lab.errors import SettingsError
from lowrank_lab.plan import RankPlan, break_even_rank
from lowrank_lab.prediction.fit import LossFit
from lowrank_lab.spectra.engine import LayerSpectrum

ANCHOR_TRUST = 0.5  # the share (in log) of a plan's predicted advantage over the uniform plan of its size trusted
UNIFORM_POINTS = 129  # uniform plans priced once per basis, the anchor read between them


def loss_scale(samples: int, seq_len: int) -> float:
    """N²/(2M): the factor from Σ dropped costs to the mean loss increase (module docstring)."""
    predicted, tokens = samples * (seq_len - 1), samples * seq_len
    return predicted**2 / (2 * tokens)


@dataclass(frozen=True, eq=False)
class Prediction:
    """What a plan is predicted to do (see the module docstring).

    Attributes:
        activation_error: sqrt(Σ dropped σ̃ᵢ² / Σ σ̃ᵢ²) over every linear matrix.
        kind_errors: the same per kind.
        matrix_errors: per matrix, aligned with :attr:`PredictionBasis.names`, shape (n,).
        raw_loss_increase: D, the uncalibrated second-order estimate (nats per token); None
            (and every loss figure with it) for a model with no language-model loss.
        loss_increase, loss_low, loss_high: ΔL after the fit, and its band.
        perplexity, perplexity_low, perplexity_high: dense perplexity × exp(ΔL) (None when the
            dense perplexity is unknown).
        fit: the fit used.
    """

    activation_error: float
    kind_errors: dict[str, float]
    matrix_errors: np.ndarray
    linear_kept: float
    raw_loss_increase: float | None
    anchored_loss_increase: float | None
    loss_increase: float | None
    loss_low: float | None
    loss_high: float | None
    perplexity: float | None
    perplexity_low: float | None
    perplexity_high: float | None
    fit: LossFit

    def as_dict(self) -> dict:
        """The figures a run records (``perplexity*`` as the store's prediction columns)."""
        return {
            "activation_error": self.activation_error,
            "raw_loss_increase": self.raw_loss_increase,
            "anchored_loss_increase": self.anchored_loss_increase,
            "loss_increase": self.loss_increase,
            "loss_low": self.loss_low,
            "loss_high": self.loss_high,
            "perplexity": self.perplexity,
            "perplexity_low": self.perplexity_low,
            "perplexity_high": self.perplexity_high,
            "fit_runs": self.fit.runs,
            "kind_errors": dict(self.kind_errors),
        }


class PredictionBasis:
    """Per-matrix cumulative sums of whitened energy and loss cost, for many plans of one model.

    Args:
        whitened: whitened spectra (σ̃ of W·S) of the linear matrices, from
            :func:`lowrank_lab.compress.whitened_spectra`.
        costs: matrix name → loss cost of dropping each whitened component, in the same order
            as its σ̃ (:func:`lowrank_lab.compress.auto.component_costs`); None for a model with
            no language-model loss (an encoder): errors only, no predicted loss.
        scale: N²/(2M) of the calibration (:func:`loss_scale`).
        dense_perplexity: the dense model's perplexity on the evaluation text (None: predict
            the loss increase only).
        fit: how raw predictions map to measured ones (default: the prior).
        calibration: how the calibration was made, in words and numbers (recorded with runs).

    Raises:
        SettingsError: a matrix's costs are missing or do not match its spectrum.
    """

    def __init__(
        self,
        whitened: list[LayerSpectrum],
        costs: Mapping[str, np.ndarray] | None,
        scale: float,
        dense_perplexity: float | None = None,
        fit: LossFit | None = None,
        calibration: Mapping | None = None,
    ):
        self.names = tuple(sp.name for sp in whitened)
        self.kinds = tuple(sp.kind for sp in whitened)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.scale = float(scale)
        self.dense_perplexity = dense_perplexity
        self.fit = fit or LossFit()
        self.calibration = dict(calibration or {})
        self.shapes = tuple(sp.shape for sp in whitened)
        self.full_ranks = np.array([len(sp.s) for sp in whitened], dtype=np.int64)
        self.break_even = np.array([break_even_rank(sp.shape) for sp in whitened], dtype=np.int64)
        energy_tails, cost_tails = [], []
        for sp in whitened:
            energy_tails.append(_tail(np.square(sp.s.astype(np.float64))))
            if costs is None:
                continue
            cost = np.asarray(costs.get(sp.name, ()), dtype=np.float64)
            if cost.shape != sp.s.shape:
                raise SettingsError(
                    f"the loss costs of {sp.name} have shape {cost.shape}, its whitened spectrum {sp.s.shape}; "
                    "compute both from the same calibration"
                )
            cost_tails.append(_tail(np.clip(cost, 0.0, None)))
        lengths = self.full_ranks + 1
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.energy_tail = np.concatenate(energy_tails) if energy_tails else np.zeros(0)
        self.cost_tail = None if costs is None else np.concatenate(cost_tails) if cost_tails else np.zeros(0)
        self.energy_total = self.energy_tail[self.offsets] if len(self.names) else np.zeros(0)
        kind_names = list(dict.fromkeys(self.kinds))
        self.kind_names = tuple(kind_names)
        self.kind_ids = np.array([kind_names.index(k) for k in self.kinds], dtype=np.int64)
        self.kind_totals = np.bincount(self.kind_ids, weights=self.energy_total, minlength=len(kind_names))
        self.matrix_params = np.array([m * n for m, n in self.shapes], dtype=np.float64)
        self.rank_params = np.array([m + n for m, n in self.shapes], dtype=np.float64)
        self._uniform_kept, self._uniform_raw = None, None
        if self.cost_tail is not None and len(self.names):
            kept, raw = self.uniform_plans(np.linspace(0.0, 1.0, UNIFORM_POINTS))
            order = np.argsort(kept, kind="stable")
            self._uniform_kept, self._uniform_raw = kept[order], raw[order]

    def with_fit(self, fit: LossFit) -> PredictionBasis:
        """The same basis with another fit (the sums are shared, not copied)."""
        other = object.__new__(PredictionBasis)
        other.__dict__.update(self.__dict__)
        other.fit = fit
        return other

    def kept_ranks(self, plan: RankPlan) -> np.ndarray:
        """The rank each matrix keeps under ``plan``: its full rank where the plan leaves it dense."""
        ranks = self.full_ranks.copy()
        for name, r in plan.ranks:
            i = self.index.get(name)
            if i is not None and r < self.break_even[i]:  # at or past break-even the matrix stays dense
                ranks[i] = min(r, self.full_ranks[i])
        return ranks

    def linear_kept(self, ranks: np.ndarray) -> float:
        """Linear-layer parameters kept at ``ranks`` (from :meth:`kept_ranks`), as a fraction."""
        params = np.where(ranks < self.break_even, ranks * self.rank_params, self.matrix_params)
        return float(params.sum() / self.matrix_params.sum()) if len(params) else 1.0

    def uniform_plans(self, keeps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(linear kept, raw D) of the uniform plans: every matrix keeps the fraction ``keeps[j]``.

        A matrix keeps rank max(1, ⌊keep · mn/(m+n)⌋), dense at or past break-even, as
        :func:`lowrank_lab.plan.plan_keep_params` and the ``uniform`` allocation do. Needs loss costs.
        """
        keeps = np.asarray(keeps, dtype=np.float64)
        ranks = np.maximum(1, np.floor(keeps[:, None] * self.matrix_params / self.rank_params)).astype(np.int64)
        low = ranks < self.break_even  # (p, n): compressed
        ranks = np.where(low, np.minimum(ranks, self.full_ranks), self.full_ranks)
        params = np.where(low, ranks * self.rank_params, self.matrix_params).sum(axis=1)
        raw = self.scale * self.cost_tail[self.offsets + ranks].sum(axis=1)
        return params / self.matrix_params.sum(), raw

    def anchored(self, raw, linear_kept):
        """D anchored on the uniform plan of the same size: D^t · max(D, D_u)^(1−t), t = :data:`ANCHOR_TRUST`.

        D_u is the raw estimate of the uniform plan keeping the same linear parameters (read
        between :data:`UNIFORM_POINTS` uniform plans priced once). A plan chosen by minimising D
        (``auto``, the best curve) is predicted better than it turns out: the costs it was picked
        on are estimates, and it picks where they err low (the optimizer's curse); the second
        order misses how its cuts compound. A uniform plan is chosen without looking at the
        costs, so its D carries no selection bias. Measured on smollm2-135m (``bench/prediction.py``,
        uniform and ``auto`` at five budgets), the loss ratio of an ``auto`` plan to the uniform
        plan of its size is about the square root of their D ratio: half the predicted advantage,
        in log, is real. A plan predicted worse than uniform (a hand-made one) keeps its D.
        Works on numbers and on arrays.
        """
        raw = np.asarray(raw, dtype=np.float64)
        if self._uniform_kept is None:
            out = raw
        else:
            anchor = np.maximum(raw, self.uniform_anchor(linear_kept))
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(raw > 0, raw**ANCHOR_TRUST * anchor ** (1.0 - ANCHOR_TRUST), 0.0)
        return float(out) if out.ndim == 0 else out

    def uniform_anchor(self, linear_kept):
        """D_u: the raw estimate of the uniform plan keeping ``linear_kept`` (needs loss costs)."""
        if self._uniform_kept is None:
            raise SettingsError("this prediction basis has no loss costs, so no uniform anchor")
        return np.interp(linear_kept, self._uniform_kept, self._uniform_raw)

    def predict(self, plan: RankPlan) -> Prediction:
        """The plan's activation-aware errors and predicted loss (a lookup per matrix; no SVD)."""
        ranks = self.kept_ranks(plan)
        kept = self.linear_kept(ranks)
        at = self.offsets + ranks
        dropped = self.energy_tail[at]  # (n,)
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.where(self.energy_total > 0, np.sqrt(dropped / self.energy_total), 0.0)
        kind_dropped = np.bincount(self.kind_ids, weights=dropped, minlength=len(self.kind_names))
        kind_errors = {
            k: float(math.sqrt(d / t)) if t > 0 else 0.0
            for k, d, t in zip(self.kind_names, kind_dropped, self.kind_totals)
        }
        total = float(self.energy_total.sum())
        model_error = math.sqrt(float(dropped.sum()) / total) if total > 0 else 0.0
        if self.cost_tail is None:
            none = (None,) * 8
            return Prediction(model_error, kind_errors, matrix, kept, *none, self.fit)
        raw = self.scale * float(self.cost_tail[at].sum())
        anchored = self.anchored(raw, kept)
        mid, low, high = self.fit.loss_increase(anchored)
        ppl = (None, None, None)
        if self.dense_perplexity is not None:
            ppl = tuple(self.dense_perplexity * math.exp(min(x, 700.0)) for x in (mid, low, high))
        return Prediction(model_error, kind_errors, matrix, kept, raw, anchored, mid, low, high, *ppl, self.fit)

    def error_curve(self, name: str) -> np.ndarray:
        """The activation-aware error of one matrix at every rank 1..full rank, shape (k,)."""
        i = self.index[name]
        start, k = self.offsets[i], self.full_ranks[i]
        total = self.energy_total[i]
        tail = self.energy_tail[start + 1 : start + k + 1]
        return np.sqrt(tail / total) if total > 0 else np.zeros(k)


def _tail(values: np.ndarray) -> np.ndarray:
    """tail[r] = Σ_{i≥r} values[i] for r = 0..k (tail[k] = 0), shape (k+1,)."""
    return np.concatenate([np.cumsum(values[::-1])[::-1], [0.0]])
