"""Heavy-tailed metrics of a weight matrix from its eigenvalues λᵢ = σᵢ² (no new SVD).

The empirical spectral density (ESD) of a trained layer's WᵀW has a power-law tail,
p(λ) ∝ λ^(−α) for λ ≥ x_min, and its exponent α says how the layer is trained (Martin &
Mahoney, 2021; the WeightWatcher tool): α between 2 and 6 is what well-trained layers show
(2–4 the best), α < 2 a very heavy tail (over-fit or over-trained), α > 6 a tail close to a
random matrix's (under-trained).

The fit is the Clauset–Shalizi–Newman method (SIAM Review 2009): for every candidate x_min
among the eigenvalues, α by maximum likelihood, α = 1 + n / Σ_{λ ≥ x_min} ln(λ / x_min), and
the Kolmogorov–Smirnov distance D between the tail's empirical CDF and the fitted one; the
x_min with the smallest D wins. We use WeightWatcher's conventions (empirical CDF k/n at the
k-th tail point, a candidate with α ≤ 1 scores D = 1, ties go to the smaller x_min), so α
agrees with its ``analyze()`` (``bench/spectra.py`` measures it).

Speed: D needs every tail point for every candidate, O(N²) per matrix. Each candidate's D on
every ``_STRIDE``-th tail point is a lower bound of its true D (a maximum over fewer points),
so the exact D is computed only for the candidates whose bound is below the best exact D found
so far: the same answer as the full search, with a fraction of the work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the engine imports this module for LayerSpectrum.heavy_tail
    from lowrank_lab.spectra.engine import LayerSpectrum

# Fewer tail points than this give no meaningful fit (WeightWatcher needs 8 eigenvalues).
MIN_EIGENVALUES = 8
# The "well trained" band and its best part (Martin & Mahoney; WeightWatcher's documentation).
ALPHA_BAND = (2.0, 6.0)
ALPHA_BEST = (2.0, 4.0)

_STRIDE = 16  # lower-bound pass: every 16th tail point
_BATCH = 64  # exact pass: candidates scored together


@dataclass(frozen=True)
class PowerLawFit:
    """A power law fitted to the tail of a set of eigenvalues.

    Attributes:
        alpha: the exponent of p(λ) ∝ λ^(−α) for λ ≥ ``xmin`` (NaN when no fit was possible).
        xmin: where the tail starts (the chosen eigenvalue).
        xmax: the largest eigenvalue.
        ks_distance: the Kolmogorov–Smirnov distance D of the fit over the tail, in 0..1.
        sigma: the standard error of α, (α − 1)/√n.
        n_tail: eigenvalues in the tail (λ ≥ xmin).
        n_evals: eigenvalues the fit looked at (those above the noise floor).
    """

    alpha: float
    xmin: float
    xmax: float
    ks_distance: float
    sigma: float
    n_tail: int
    n_evals: int

    @property
    def ok(self) -> bool:
        return math.isfinite(self.alpha)


def _no_fit(x: np.ndarray) -> PowerLawFit:
    top = float(x[-1]) if x.size else math.nan
    return PowerLawFit(math.nan, math.nan, top, math.nan, math.nan, 0, int(x.size))


def _candidate_alphas(log_x: np.ndarray) -> np.ndarray:
    """α for each candidate x_min = x[i], i < N−1: 1 + n / (Σ_{j≥i} ln x_j − n ln x_i)."""
    n_all = log_x.size
    tail_sums = np.cumsum(log_x[::-1])[::-1]  # Σ_{j≥i} ln x_j
    n = n_all - np.arange(n_all - 1)
    spread = tail_sums[:-1] - n * log_x[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, 1.0 + n / spread, 1.0)


def _ks(log_x: np.ndarray, alphas: np.ndarray, starts: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """max over ``columns`` j ≥ i of |F_fit(x_j) − (j−i)/n| for each candidate i in ``starts``.

    F_fit(x) = 1 − (x/x_i)^(1−α). Columns before a candidate's start are ignored.
    """
    n_all = log_x.size
    i = starts[:, None]
    j = columns[None, :]
    a = alphas[starts][:, None]
    rise = np.maximum(log_x[j] - log_x[i], 0.0)  # columns before the start are masked below
    fitted = -np.expm1((1.0 - a) * rise)  # (candidates, columns)
    empirical = (j - i) / (n_all - i)
    gap = np.where(j >= i, np.abs(fitted - empirical), 0.0)
    return gap.max(axis=1)


def fit_power_law(eigenvalues: np.ndarray, floor: float = 0.0) -> PowerLawFit:
    """Fit p(λ) ∝ λ^(−α), λ ≥ x_min, with x_min chosen by the smallest Kolmogorov–Smirnov distance.

    Args:
        eigenvalues: λᵢ ≥ 0 in any order, shape (k,).
        floor: eigenvalues at or below it are treated as zero (rounding noise) and left out.

    Returns:
        The fit; ``alpha`` is NaN when fewer than :data:`MIN_EIGENVALUES` lie above ``floor``.
    """
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    x = x[x > max(floor, 0.0)]
    if x.size < MIN_EIGENVALUES or x[0] == x[-1]:
        return _no_fit(x)
    log_x = np.log(x)
    alphas = _candidate_alphas(log_x)
    valid = alphas > 1.0
    candidates = np.flatnonzero(valid)
    if candidates.size == 0:
        return _no_fit(x)
    n_all = x.size
    # Lower bounds from a subsample of tail points (each candidate's own start scores 0).
    columns = np.unique(np.concatenate([np.arange(0, n_all, _STRIDE), [n_all - 1]]))
    bounds = _ks(log_x, alphas, candidates, columns)
    order = candidates[np.argsort(bounds, kind="stable")]
    sorted_bounds = np.sort(bounds, kind="stable")
    best_d, best_i = math.inf, -1
    every = np.arange(n_all)
    for start in range(0, order.size, _BATCH):
        if sorted_bounds[start] > best_d:
            break  # no remaining candidate can beat (or tie) the best exact distance
        batch = order[start : start + _BATCH]
        exact = _ks(log_x, alphas, batch, every)
        for i, d in zip(batch, exact):
            if d < best_d or (d == best_d and i < best_i):
                best_d, best_i = float(d), int(i)
    alpha = float(alphas[best_i])
    n_tail = n_all - best_i
    return PowerLawFit(
        alpha=alpha,
        xmin=float(x[best_i]),
        xmax=float(x[-1]),
        ks_distance=best_d,
        sigma=(alpha - 1.0) / math.sqrt(n_tail),
        n_tail=int(n_tail),
        n_evals=int(n_all),
    )


def noise_floor(sp: LayerSpectrum) -> float:
    """The eigenvalue below which λ is rounding noise: the square of the numerical-rank tolerance.

    A singular value at or under max(m, n)·ε·σ₁ (ε of the stored dtype; never under the
    engine's resolution 1e-6·σ₁) carries no information, so its λ is left out of the fit.
    Relative to σ₁, this floor works the same for a weight and for a small weight change.
    """
    if not sp.s.size or sp.s[0] <= 0:
        return 0.0
    rank = sp.metrics.numerical_rank
    if rank >= sp.s.size:
        return 0.0  # every value is above the tolerance (which is never under RESOLUTION·σ₁)
    return float(sp.s[rank]) ** 2


@dataclass(frozen=True)
class HeavyTailMetrics:
    """WeightWatcher's per-layer metrics, from λᵢ = σᵢ².

    Attributes:
        alpha: the power-law exponent of the ESD's tail (NaN: too few eigenvalues).
        ks_distance: the fit's Kolmogorov–Smirnov distance D (small: the tail is a power law).
        xmin: where the fitted tail starts (an eigenvalue).
        n_tail: eigenvalues in the fitted tail.
        sigma: the standard error of α.
        log_spectral_norm: log₁₀ λ_max = log₁₀ σ₁².
        alpha_weighted: α · log₁₀ λ_max.
        log_norm: log₁₀ Σ λᵢ = log₁₀ ‖W‖_F².
        log_alpha_norm: log₁₀ Σ λᵢ^α (the Schatten α-norm, to the α).
    """

    alpha: float
    ks_distance: float
    xmin: float
    n_tail: int
    sigma: float
    log_spectral_norm: float
    alpha_weighted: float
    log_norm: float
    log_alpha_norm: float

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def band(self) -> str:
        """``heavy`` (α < 2), ``well-trained`` (2 ≤ α ≤ 6), ``random-like`` (α > 6) or ``no fit``."""
        return alpha_band(self.alpha)


def alpha_band(alpha: float) -> str:
    """Where α falls: ``heavy`` (< 2), ``well-trained`` (2..6), ``random-like`` (> 6), ``no fit`` (NaN)."""
    if not math.isfinite(alpha):
        return "no fit"
    if alpha < ALPHA_BAND[0]:
        return "heavy"
    return "well-trained" if alpha <= ALPHA_BAND[1] else "random-like"


def heavy_tail_metrics(sp: LayerSpectrum) -> HeavyTailMetrics:
    """Fit the ESD's tail of one matrix and derive WeightWatcher's norm metrics (no SVD).

    ``LayerSpectrum.heavy_tail`` calls this once per spectrum and keeps the result.

    Args:
        sp: the matrix's spectrum (singular values from the cache).

    Returns:
        Its :class:`HeavyTailMetrics`; metrics of a zero matrix are NaN.
    """
    lam = np.square(sp.s, dtype=np.float64)
    fit = fit_power_law(lam, floor=noise_floor(sp))
    top = float(lam[0]) if lam.size else 0.0
    if top <= 0:
        nan = math.nan
        return HeavyTailMetrics(nan, nan, nan, 0, nan, nan, nan, nan, nan)
    log_top = math.log10(top)
    alpha = fit.alpha
    if math.isfinite(alpha):
        # Σ λ^α = λ_max^α · Σ (λ/λ_max)^α, summed without overflow.
        log_alpha_norm = alpha * log_top + math.log10(float(np.sum((lam / top) ** alpha)))
    else:
        log_alpha_norm = math.nan
    return HeavyTailMetrics(
        alpha=alpha,
        ks_distance=fit.ks_distance,
        xmin=fit.xmin,
        n_tail=fit.n_tail,
        sigma=fit.sigma,
        log_spectral_norm=log_top,
        alpha_weighted=alpha * log_top,
        log_norm=math.log10(float(lam.sum())),
        log_alpha_norm=log_alpha_norm,
    )


def heavy_tail_records(spectra: list[LayerSpectrum]) -> list[dict]:
    """One flat row per matrix: its name and every heavy-tailed metric, with α's band."""
    rows = []
    for sp in spectra:
        m = sp.heavy_tail
        rows.append({"name": sp.name, **m.as_dict(), "alpha_band": m.band})
    return rows
