"""Per-matrix metrics computed from singular values alone."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lowrank_lab.spectra.svd import RESOLUTION

ENERGY_LEVELS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class SpectrumMetrics:
    """What a matrix's singular values say about it.

    Attributes:
        frobenius: ‖W‖_F = sqrt(Σ σᵢ²).
        spectral: ‖W‖₂ = σ₁.
        stable_rank: ‖W‖_F² / σ₁², a smooth lower bound of the rank.
        effective_rank: exp of the entropy of σᵢ/Σσ (Roy & Vetterli, 2007).
        energy_rank_90, energy_rank_95, energy_rank_99: the smallest rank r with
            Σ_{i≤r} σᵢ² ≥ 90/95/99% of Σ σᵢ².
        numerical_rank: singular values above max(m, n)·ε·σ₁ (ε of the stored dtype), as in
            ``numpy.linalg.matrix_rank``, but never below the engine's resolution (1e-6·σ₁).
        mp_edge: the Marchenko–Pastur bulk edge σ·(√m + √n) of an m×n random matrix with
            i.i.d. entries of the same variance σ² = ‖W‖_F²/(m·n).
        mp_outliers: singular values above that edge: structure a random matrix would not have.
    """

    frobenius: float
    spectral: float
    stable_rank: float
    effective_rank: float
    energy_rank_90: int
    energy_rank_95: int
    energy_rank_99: int
    numerical_rank: int
    mp_edge: float
    mp_outliers: int

    def as_dict(self) -> dict:
        return asdict(self)


def energy_rank(s: np.ndarray, level: float) -> int:
    """Smallest r with Σ_{i≤r} σᵢ² ≥ level·Σ σᵢ² (0 for a zero matrix)."""
    energy = np.cumsum(np.square(s, dtype=np.float64))
    if energy.size == 0 or energy[-1] == 0:
        return 0
    # A relative slack of 1e-12 keeps an exact boundary (e.g. 9 of 10 equal values at 90%) exact.
    return int(np.searchsorted(energy, level * energy[-1] * (1 - 1e-12)) + 1)


def numerical_rank(s: np.ndarray, shape: tuple[int, int], eps: float) -> int:
    """Singular values above max(m, n)·eps·σ₁ (and above what the Gram route resolves)."""
    top = float(s[0]) if len(s) else 0.0
    return int(np.sum(np.asarray(s) > max(max(shape) * eps, RESOLUTION) * top)) if top > 0 else 0


def spectrum_metrics(
    s: np.ndarray, shape: tuple[int, int], eps: float = float(np.finfo(np.float32).eps)
) -> SpectrumMetrics:
    """Compute :class:`SpectrumMetrics` from singular values.

    Args:
        s: singular values, descending, float64, length min(shape).
        shape: the matrix's (m, n).
        eps: machine epsilon of the dtype the weights were stored in (for the numerical rank).
    """
    m, n = shape
    s = np.asarray(s, dtype=np.float64)
    total = float(np.sum(np.square(s)))
    top = float(s[0]) if s.size else 0.0
    if top == 0.0:
        return SpectrumMetrics(0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0.0, 0)
    p = s / s.sum()
    p = p[p > 0]
    sigma = math.sqrt(total / (m * n))
    edge = sigma * (math.sqrt(m) + math.sqrt(n))
    return SpectrumMetrics(
        frobenius=math.sqrt(total),
        spectral=top,
        stable_rank=total / top**2,
        effective_rank=float(np.exp(-np.sum(p * np.log(p)))),
        energy_rank_90=energy_rank(s, 0.90),
        energy_rank_95=energy_rank(s, 0.95),
        energy_rank_99=energy_rank(s, 0.99),
        numerical_rank=numerical_rank(s, shape, eps),
        mp_edge=edge,
        mp_outliers=int(np.sum(s > edge)),
    )
