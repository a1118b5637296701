"""The ESD view: the histogram is a density, the Marchenko–Pastur curve fits a random matrix, the tail curve its share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.spectra.engine import spectrum_of
from lowrank_lab.spectra.esd import esd_view, marchenko_pastur


def _spectrum(w: torch.Tensor):
    m = WeightMatrix("w", "w", None, tuple(w.shape), "Linear", False, (), w)
    return spectrum_of(m, np.linalg.svd(w.double().numpy(), compute_uv=False))


@pytest.mark.parametrize("shape", [(400, 100), (100, 400), (200, 200)])
def test_marchenko_pastur_is_a_density_on_its_support(shape):
    x, y = marchenko_pastur(shape, variance=0.7, points=20000)
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.02)  # square: the 1/√λ edge costs a little
    k, n = min(shape), max(shape)
    assert x[-1] == pytest.approx(0.7 * (np.sqrt(n) + np.sqrt(k)) ** 2)


def test_a_random_matrix_follows_marchenko_pastur():
    torch.manual_seed(0)
    sp = _spectrum(0.3 * torch.randn(1200, 300))
    view = esd_view(sp, bins=10)  # about 30 eigenvalues a bin: ±20% counting noise
    assert np.sum(view.density * np.diff(view.edges)) == pytest.approx(1.0)
    assert view.edges[-1] == pytest.approx(view.mp_edge, rel=0.05)  # the largest λ sits at the bulk edge
    predicted = np.interp(view.centers, view.mp_x, view.mp_y)
    inner = slice(1, -1)  # away from the edges, where bins straddle the support's end
    assert np.allclose(view.density[inner], predicted[inner], rtol=0.3)


def test_the_power_law_curve_carries_the_tail_share():
    rng = np.random.default_rng(0)
    s = np.sqrt(np.sort((1 - rng.random(300)) ** (-1 / 2.0))[::-1])  # λ Pareto with α = 3
    w = torch.from_numpy(np.diag(s))
    view = esd_view(_spectrum(w))
    m = view.metrics
    assert view.power_law_x[0] == m.xmin and view.power_law_x[-1] == pytest.approx(s[0] ** 2)
    mass = np.trapezoid(view.power_law_y, view.power_law_x)
    tail_share = m.n_tail / view.n_evals
    # ∫ from x_min to λ_max: the share times the fitted CDF at λ_max (nearly 1).
    assert mass == pytest.approx(tail_share * (1 - (s[0] ** 2 / m.xmin) ** (1 - m.alpha)), rel=1e-3)


def test_zero_matrix_has_an_empty_view():
    view = esd_view(_spectrum(torch.zeros(8, 8)))
    assert view.n_evals == 0 and view.power_law_x.size == 0 and view.mp_x.size == 0
