"""The empirical spectral density (ESD) of one matrix, with the two densities it is read against.

Drawn on log–log axes: a histogram of the eigenvalues λᵢ = σᵢ² of WᵀW (log-spaced bins, as a
density in λ), the fitted power law of its tail, and the Marchenko–Pastur density of a random
matrix of the same shape whose entries have the same variance. A trained layer's spectrum
departs from Marchenko–Pastur in a heavy tail; how heavy is α.

Marchenko–Pastur: an m×n matrix with i.i.d. entries of variance s² (s² = ‖W‖_F²/(m·n)) has k =
min(m, n) eigenvalues of WWᵀ (or WᵀW) spread on [λ₋, λ₊], λ± = s²(√N ± √k)² with N = max(m, n),
with density p(λ) = √((λ₊ − λ)(λ − λ₋)) / (2π s² k λ), which integrates to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.heavy_tail import HeavyTailMetrics, noise_floor


@dataclass(frozen=True, eq=False)
class EsdView:
    """What the ESD chart draws for one matrix.

    Attributes:
        edges: log-spaced bin edges in λ, shape (b + 1,).
        density: eigenvalues per bin / (their total count × bin width), shape (b,).
        power_law_x, power_law_y: the fitted tail's density over [x_min, λ_max], scaled to the
            tail's share of the eigenvalues (empty when there is no fit), shape (p,).
        mp_x, mp_y: the Marchenko–Pastur density over its support [λ₋, λ₊], shape (q,).
        mp_edge: λ₊, the largest eigenvalue a random matrix like it would have.
        metrics: the heavy-tailed metrics of the fit.
        n_evals: eigenvalues in the histogram (those above the noise floor).
    """

    edges: np.ndarray
    density: np.ndarray
    power_law_x: np.ndarray
    power_law_y: np.ndarray
    mp_x: np.ndarray
    mp_y: np.ndarray
    mp_edge: float
    metrics: HeavyTailMetrics
    n_evals: int

    @property
    def centers(self) -> np.ndarray:
        """Geometric bin centres, shape (b,)."""
        return np.sqrt(self.edges[:-1] * self.edges[1:])


def marchenko_pastur(shape: tuple[int, int], variance: float, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The Marchenko–Pastur density of the eigenvalues of WᵀW for a random m×n W.

    Args:
        shape: (m, n).
        variance: the entries' variance s².
        points: samples over the support, spaced evenly in log λ (denser at the edges' roots).

    Returns:
        (λ, p(λ)), each shape (points,); p integrates to 1 over the support.
    """
    k, big = min(shape), max(shape)
    lo = variance * (math.sqrt(big) - math.sqrt(k)) ** 2
    hi = variance * (math.sqrt(big) + math.sqrt(k)) ** 2
    if variance <= 0:
        return np.zeros(0), np.zeros(0)
    # A square matrix's support starts at 0: begin the log grid a little above it.
    start = lo if lo > 0 else hi * 1e-6
    x = np.geomspace(start, hi, points)
    y = np.sqrt(np.clip((hi - x) * (x - lo), 0.0, None)) / (2 * math.pi * variance * k * x)
    return x, y


def esd_view(sp: LayerSpectrum, bins: int = 60) -> EsdView:
    """The ESD of ``sp`` with its fitted power law and its Marchenko–Pastur density (no SVD).

    Args:
        sp: the matrix's spectrum (cached singular values).
        bins: histogram bins, log-spaced between the smallest and largest eigenvalue.
    """
    lam = np.square(sp.s, dtype=np.float64)
    lam = lam[lam > noise_floor(sp)]
    metrics = sp.heavy_tail
    m, n = sp.shape
    variance = sp.metrics.frobenius**2 / (m * n)
    mp_x, mp_y = marchenko_pastur(sp.shape, variance)
    mp_edge = variance * (math.sqrt(m) + math.sqrt(n)) ** 2
    if lam.size == 0:
        empty = np.zeros(0)
        return EsdView(np.array([1.0, 10.0]), np.zeros(1), empty, empty, mp_x, mp_y, mp_edge, metrics, 0)
    lo, hi = float(lam.min()), float(lam.max())
    edges = np.geomspace(lo, hi, bins + 1) if hi > lo else np.array([lo * 0.9, hi * 1.1])
    counts, _ = np.histogram(lam, bins=edges)
    density = counts / (lam.size * np.diff(edges))
    px = py = np.zeros(0)
    if math.isfinite(metrics.alpha):
        a, xmin = metrics.alpha, metrics.xmin
        px = np.geomspace(xmin, hi, 100)
        share = metrics.n_tail / lam.size  # the tail's density integrates to its share of the eigenvalues
        py = share * (a - 1) / xmin * (px / xmin) ** (-a)
    return EsdView(edges, density, px, py, mp_x, mp_y, mp_edge, metrics, int(lam.size))
