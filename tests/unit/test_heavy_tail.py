"""Heavy-tailed metrics: the power-law fit against its definition, known exponents, and the norms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank_lab import compute_spectra
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.spectra.engine import spectrum_of
from lowrank_lab.spectra.heavy_tail import (
    MIN_EIGENVALUES,
    alpha_band,
    fit_power_law,
    heavy_tail_metrics,
    heavy_tail_records,
    noise_floor,
)


def reference_fit(lam: np.ndarray, floor: float = 0.0) -> tuple[float, float, float, int]:
    """The Clauset–Shalizi–Newman search written out plainly: every x_min, its MLE α and KS distance."""
    x = np.sort(lam[lam > floor])
    n_all = len(x)
    best = (math.inf, None, None, 0)
    for i in range(n_all - 1):
        tail = x[i:]
        n = len(tail)
        spread = np.sum(np.log(tail)) - n * np.log(x[i])
        alpha = 1 + n / spread if spread > 0 else 1.0
        d = 1.0
        if alpha > 1:
            fitted = 1 - (tail / x[i]) ** (1 - alpha)
            d = float(np.max(np.abs(fitted - np.arange(n) / n)))
        if d < best[0]:
            best = (d, alpha, x[i], n)
    return best[1], best[2], best[0], best[3]


def _spectrum(w: torch.Tensor):
    m = WeightMatrix("w", "w", None, tuple(w.shape), "Linear", False, (), w)
    return spectrum_of(m, np.linalg.svd(w.double().numpy(), compute_uv=False))


@pytest.mark.parametrize(
    "sample",
    [
        lambda rng: rng.pareto(2.0, 300) + 1.0,  # α = 3 tail
        lambda rng: np.square(np.linalg.svd(rng.standard_normal((200, 80)), compute_uv=False)),  # MP bulk
        lambda rng: np.square(np.linalg.svd(rng.standard_t(3, (160, 90)), compute_uv=False)),  # heavy entries
        lambda rng: np.round(rng.pareto(1.5, 500) + 1.0, 1),  # many ties
        lambda rng: rng.pareto(3.0, 9) + 1.0,  # barely enough eigenvalues
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pruned_search_finds_exactly_what_the_full_search_finds(sample, seed):
    lam = sample(np.random.default_rng(seed))
    fit = fit_power_law(lam)
    alpha, xmin, d, n_tail = reference_fit(lam)
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.xmin == xmin
    assert fit.ks_distance == pytest.approx(d, abs=1e-12)
    # With ties the tail starts at the first copy of x_min the search reached, as in WeightWatcher.
    assert fit.n_tail == n_tail and fit.xmax == lam.max()


@pytest.mark.parametrize("alpha", [2.5, 3.5, 5.0])
def test_recovers_a_known_exponent(alpha):
    # Pareto with density ∝ x^(−α) on x ≥ 1, below it a uniform bulk the fit must cut off.
    rng = np.random.default_rng(7)
    tail = (1 - rng.random(4000)) ** (-1 / (alpha - 1))
    bulk = rng.uniform(0.01, 1.0, 2000)
    fit = fit_power_law(np.concatenate([bulk, tail]))
    assert fit.alpha == pytest.approx(alpha, rel=0.06)
    assert 0.5 < fit.xmin < 3.0
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


def test_too_few_or_constant_eigenvalues_give_no_fit():
    assert math.isnan(fit_power_law(np.arange(1.0, MIN_EIGENVALUES)).alpha)
    assert math.isnan(fit_power_law(np.ones(50)).alpha)
    assert math.isnan(fit_power_law(np.zeros(50)).alpha)
    # Values at or under the floor do not count.
    assert math.isnan(fit_power_law(np.linspace(1, 2, 20), floor=1.9).alpha)


def test_norm_metrics_follow_their_definitions():
    torch.manual_seed(0)
    sp = _spectrum(torch.randn(96, 64) @ torch.diag(torch.linspace(0.1, 3, 64)))
    m = heavy_tail_metrics(sp)
    lam = sp.s**2
    assert m.log_spectral_norm == pytest.approx(math.log10(lam[0]))
    assert m.alpha_weighted == pytest.approx(m.alpha * math.log10(lam[0]))
    assert m.log_norm == pytest.approx(math.log10(sp.metrics.frobenius**2))
    assert m.log_alpha_norm == pytest.approx(math.log10(np.sum(lam**m.alpha)))
    assert m.alpha == fit_power_law(lam).alpha  # full rank: nothing under the noise floor
    assert m.band == alpha_band(m.alpha)


def test_rank_deficient_matrix_leaves_its_zero_eigenvalues_out():
    torch.manual_seed(0)
    w = torch.randn(80, 12) @ torch.randn(12, 64)  # rank 12 of 64
    sp = _spectrum(w)
    assert sp.metrics.numerical_rank == 12
    assert sp.s[12] ** 2 == noise_floor(sp)
    fit_alpha = heavy_tail_metrics(sp).alpha
    assert fit_alpha == fit_power_law(sp.s[:12] ** 2).alpha


def test_zero_matrix_is_all_nan():
    sp = _spectrum(torch.zeros(16, 16))
    m = heavy_tail_metrics(sp)
    assert math.isnan(m.alpha) and math.isnan(m.log_spectral_norm) and m.band == "no fit"


@pytest.mark.parametrize(("alpha", "band"), [(1.5, "heavy"), (2.0, "well-trained"), (6.0, "well-trained"),
                                             (6.5, "random-like"), (math.nan, "no fit")])  # fmt: skip
def test_bands(alpha, band):
    assert alpha_band(alpha) == band


def test_records_for_a_model_are_remembered_per_spectrum(tiny_gpt2):
    spectra = compute_spectra(tiny_gpt2.model, cache=False)
    rows = heavy_tail_records(spectra)
    assert [r["name"] for r in rows] == [sp.name for sp in spectra]
    assert all(math.isfinite(r["alpha"]) and 0 <= r["ks_distance"] <= 1 for r in rows)
    assert spectra[0].heavy_tail is spectra[0].heavy_tail  # fitted once per spectrum
