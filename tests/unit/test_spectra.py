"""Spectra against float64 LAPACK, metrics on matrices with known answers, and the disk cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank_lab import compute_spectra, singular_values, weight_matrices
from lowrank_lab.spectra import SpectrumCache, spectrum_metrics
from lowrank_lab.spectra.svd import singular_values_many


def _reference(w: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(w.detach().double().numpy(), compute_uv=False)


def _assert_close_to_lapack(s: np.ndarray, ref: np.ndarray) -> None:
    assert s.shape == ref.shape
    assert np.all(np.diff(s) <= 1e-12 * s[0])  # descending
    keep = ref >= 1e-3 * ref[0]
    assert np.max(np.abs(s[keep] - ref[keep]) / ref[keep]) <= 1e-3


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 9), (9, 5), (64, 64), (200, 33), (33, 9000), (9000, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_singular_values_match_float64_lapack(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(shape, generator=g).to(dtype)
    _assert_close_to_lapack(singular_values(w), _reference(w.float()))


def test_ill_conditioned_matrix_keeps_accuracy_down_to_1e_minus_3():
    # singular values spread from 1 to 1e-4: those ≥ 1e-3 must still be within 1e-3 relative
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(300, 120, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(120, 120, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -4, 120, dtype=torch.float64)
    w = ((u * s) @ v.T).float()
    _assert_close_to_lapack(singular_values(w), _reference(w))


def test_transposed_view_and_many(tiny_gpt2):
    matrices = weight_matrices(tiny_gpt2.model)
    many = list(singular_values_many([m.matrix() for m in matrices], workers=2))
    for m, s in zip(matrices, many):
        _assert_close_to_lapack(s, _reference(m.matrix()))
    assert np.array_equal(many[3], singular_values(matrices[3].matrix()))


def test_rank_k_matrix():
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(40, 5, generator=g) @ torch.randn(5, 30, generator=g)).double()
    s = singular_values(w)
    m = spectrum_metrics(s, (40, 30), eps=float(np.finfo(np.float64).eps))
    assert m.numerical_rank == 5
    assert m.energy_rank_99 <= 5
    assert s[5] < 1e-6 * s[0]


def test_orthogonal_matrix():
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    s = singular_values(q)
    np.testing.assert_allclose(s, 1.0, rtol=1e-10)
    m = spectrum_metrics(s, (50, 50))
    assert m.spectral == pytest.approx(1.0)
    assert m.frobenius == pytest.approx(math.sqrt(50))
    assert m.stable_rank == pytest.approx(50)
    assert m.effective_rank == pytest.approx(50)
    assert (m.energy_rank_90, m.energy_rank_95, m.energy_rank_99) == (45, 48, 50)
    assert m.numerical_rank == 50


def test_marchenko_pastur_edge_on_noise_and_on_planted_structure():
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(400, 200, generator=g, dtype=torch.float64)
    m = spectrum_metrics(singular_values(noise), (400, 200))
    assert m.mp_edge == pytest.approx(math.sqrt(400) + math.sqrt(200), rel=0.02)
    # pure noise reaches the edge up to finite-size (Tracy–Widom) fluctuations, no further
    assert m.spectral == pytest.approx(m.mp_edge, rel=0.03)
    assert m.mp_outliers <= 1
    u = torch.randn(400, 3, generator=g, dtype=torch.float64)
    v = torch.randn(3, 200, generator=g, dtype=torch.float64)
    spiked = noise + 2.0 * u @ v
    assert spectrum_metrics(singular_values(spiked), (400, 200)).mp_outliers == 3


def test_zero_matrix_metrics_are_zero():
    m = spectrum_metrics(np.zeros(4), (4, 6))
    assert m.numerical_rank == 0 and m.stable_rank == 0 and m.energy_rank_90 == 0


def test_compute_spectra_covers_every_matrix_with_progress(tiny_llama, tmp_path):
    calls = []
    spectra = compute_spectra(
        tiny_llama.model, cache=SpectrumCache(tmp_path), progress=lambda d, t, msg: calls.append((d, t))
    )
    matrices = weight_matrices(tiny_llama.model)
    assert [sp.name for sp in spectra] == [m.name for m in matrices]
    assert calls[-1] == (len(matrices), len(matrices))
    for sp, m in zip(spectra, matrices):
        _assert_close_to_lapack(sp.s, _reference(m.matrix()))
        assert sp.metrics.spectral == pytest.approx(sp.s[0])


def test_cache_hit_reads_the_stored_values(tiny_llama, tmp_path):
    cache = SpectrumCache(tmp_path)
    first = compute_spectra(tiny_llama.model, cache=cache)
    assert len(list(tmp_path.glob("*.safetensors"))) == len(first)
    # Overwrite one entry: a hit must return what is stored, proving no SVD ran for it.
    target = first[1]
    marker = np.linspace(9.0, 1.0, target.full_rank)
    cache.put(target.digest, marker)
    second = compute_spectra(tiny_llama.model, cache=cache)
    np.testing.assert_array_equal(second[1].s, marker)
    np.testing.assert_array_equal(second[2].s, first[2].s)


def test_cache_misses_after_a_weight_changes(tiny_llama, tmp_path):
    cache = SpectrumCache(tmp_path)
    model = tiny_llama.copy()
    before = compute_spectra(model, cache=cache)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3  # one element, a tiny change
    after = compute_spectra(model, cache=cache)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a.digest != b.digest]
    names = [after[i].name for i in changed]
    assert names == ["model.layers.0.mlp.up_proj"]
    assert not np.array_equal(before[changed[0]].s, after[changed[0]].s)
    assert len(list(tmp_path.glob("*.safetensors"))) == len(before) + 1


def test_corrupt_cache_entry_is_recomputed(tiny_gpt2, tmp_path):
    cache = SpectrumCache(tmp_path)
    first = compute_spectra(tiny_gpt2.model, cache=cache)
    (tmp_path / f"{first[0].digest}.safetensors").write_bytes(b"garbage")
    again = compute_spectra(tiny_gpt2.model, cache=cache)
    np.testing.assert_allclose(again[0].s, first[0].s)


def test_shared_model_is_not_changed(tiny_llama, tmp_path):
    before = {n: p.clone() for n, p in tiny_llama.model.named_parameters()}
    compute_spectra(tiny_llama.model, cache=SpectrumCache(tmp_path))
    for n, p in tiny_llama.model.named_parameters():
        assert torch.equal(p, before[n]), n


@pytest.mark.builtin
def test_builtin_model_spectra_against_lapack(smollm2, tmp_path):
    """The default model: every matrix analysed; a sample checked against float64 LAPACK."""
    spectra = compute_spectra(smollm2.model, cache=SpectrumCache(tmp_path))
    assert len(spectra) == 211  # 30 layers × 7 + the tied embedding
    matrices = {m.name: m for m in weight_matrices(smollm2.model)}
    for sp in spectra[1:12]:
        _assert_close_to_lapack(sp.s, _reference(matrices[sp.name].matrix()))
