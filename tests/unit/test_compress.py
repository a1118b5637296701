"""Compression on tiny models: parity at full rank, what each method minimises, budgets, the cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lowrank_lab import (
    CalibrationSettings,
    LowRankLinear,
    RankPlan,
    allocate,
    compress,
    whitened_spectra,
)
from lowrank_lab.compress.calibration import calibration_blocks
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.plan import break_even_rank, factorizes
from tests.unit.export_support import logits

CAL = CalibrationSettings(samples=4, seq_len=64)


def layer_io(loaded, name: str, settings: CalibrationSettings = CAL) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and outputs of one layer over the calibration blocks, (tokens, in) and (tokens, out)."""
    xs, ys = [], []
    module = loaded.model.get_submodule(name)

    def hook(module, inputs, output):
        xs.append(inputs[0].reshape(-1, inputs[0].shape[-1]))
        ys.append(output)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            loaded.model(input_ids=calibration_blocks(loaded, settings))
    finally:
        handle.remove()
    y = ys[0]
    return xs[0].double(), y.reshape(-1, y.shape[-1]).double()


def output_error(layer: LowRankLinear, x: torch.Tensor, y: torch.Tensor) -> float:
    """‖ŷ − y‖_F² over the tokens."""
    with torch.no_grad():
        return float((layer.double()(x) - y).square().sum())


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["svd", "whitened", "pca"])
def test_full_rank_factors_give_the_dense_logits(request, model, method):
    loaded = request.getfixturevalue(model)
    plan = RankPlan({m.name: m.full_rank for m in linear_matrices(loaded)})
    c = compress(loaded, plan, method, CAL, dense_past_break_even=False)
    n_low = sum(isinstance(m, LowRankLinear) for m in c.model.modules())
    assert n_low == len(plan) > 0
    assert torch.allclose(logits(c.model), logits(loaded.model), atol=1e-4, rtol=1e-4)


def test_shared_model_untouched_and_plan_holds_what_was_factorized(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    mats = linear_matrices(tiny_llama)
    big = mats[0]
    plan = RankPlan({mats[0].name: 4, mats[1].name: break_even_rank(mats[1].shape)})
    c = compress(tiny_llama, plan, "whitened", CAL)
    assert c.plan.as_dict() == {big.name: 4}  # the second is at break-even: stays dense
    assert isinstance(c.model.get_submodule(big.name), LowRankLinear)
    assert not any(isinstance(m, LowRankLinear) for m in tiny_llama.model.modules())
    after = tiny_llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    f = c.params.as_dict()
    saved = big.params - 4 * sum(big.shape)
    assert f["linear_params_dense"] - f["linear_params_compressed"] == saved
    assert f["params_dense"] - f["params_compressed"] == saved
    assert c.calibration == {"text": CAL.source, "samples": 4, "seq_len": 64}
    assert compress(tiny_llama, plan, "svd").calibration == {}


@pytest.mark.parametrize(
    ("model", "name"), [("tiny_llama", "model.layers.1.mlp.down_proj"), ("tiny_gpt2", "transformer.h.0.mlp.c_fc")]
)
def test_whitened_truncation_costs_its_singular_values_and_beats_svd(request, model, name):
    loaded = request.getfixturevalue(model)
    x, y = layer_io(loaded, name)
    sp = next(s for s in whitened_spectra(loaded, CAL) if s.name == name)
    rank = sp.full_rank // 4
    errors = {}
    exact = EngineSettings(ridge=0.0)  # no ridge: the truncation error is then exactly the dropped σᵢ²
    for method in ("svd", "whitened"):
        layer = compress(loaded, RankPlan({name: rank}), method, CAL, engine=exact).model.get_submodule(name)
        errors[method] = output_error(layer, x, y)
    assert errors["whitened"] < 0.9 * errors["svd"]
    # Dropping σᵢ of W·S costs exactly σᵢ² of the output error summed over the calibration tokens.
    assert errors["whitened"] == pytest.approx(float((sp.s[rank:] ** 2).sum()), rel=1e-3)


def test_pca_projects_outputs_onto_their_principal_components(tiny_llama):
    name = "model.layers.0.mlp.up_proj"
    x, y = layer_io(tiny_llama, name)
    rank = 12
    layer = compress(tiny_llama, RankPlan({name: rank}), "pca", CAL).model.get_submodule(name).double()
    u = layer.B.weight.detach()  # (out, r)
    assert torch.allclose(u.T @ u, torch.eye(rank, dtype=torch.float64), atol=1e-5)
    mu = y.mean(0)
    centred = y - mu
    evals = torch.linalg.eigvalsh(centred.T @ centred)  # ascending
    p = u @ u.T
    expected = centred @ p + mu  # ŷ = P y + (I − P) μ
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-3)
    # The error left is the variance outside the top-r components, the least any rank-r projection leaves.
    assert output_error(layer, x, y) == pytest.approx(float(evals[:-rank].sum()), rel=1e-3)


def test_rank_deficient_statistics_still_whiten(tiny_llama):
    """6 tokens into 160 inputs: XᵀX has rank ≤ 6; the ridge makes its Cholesky factor exist."""
    few = CalibrationSettings(samples=1, seq_len=6)
    c = compress(tiny_llama, allocate(tiny_llama, 0.5), "whitened", few)
    out = logits(c.model)
    assert torch.isfinite(out).all()


def test_uniform_budget_keeps_the_fraction(tiny_llama, tiny_gpt2):
    for loaded in (tiny_llama, tiny_gpt2):
        for keep in (0.3, 0.6):
            plan = allocate(loaded, keep)
            f = compress(loaded, plan, "svd").params.as_dict()
            kept = f["linear_params_compressed"] / f["linear_params_dense"]
            assert keep - 0.05 < kept <= keep
    assert len(allocate(tiny_llama, 1.0)) == 0  # nothing factorizes when everything is kept


def test_whitened_spectra_are_computed_once_per_settings_and_compress_reports_each_block(tiny_gpt2):
    settings = CalibrationSettings(samples=2, seq_len=32)
    messages: list[str] = []
    record = lambda done, total, message: messages.append(message)  # noqa: E731
    first = whitened_spectra(tiny_gpt2, settings, progress=record)
    assert any(m.startswith("whitened spectra") for m in messages)
    messages.clear()
    again = whitened_spectra(tiny_gpt2, settings, progress=record)
    assert messages == [] and [s.s.tolist() for s in again] == [s.s.tolist() for s in first]
    compress(tiny_gpt2, allocate(tiny_gpt2, 0.5), "whitened", settings, progress=record)
    assert [m for m in messages if m.endswith(": done")] == ["block 1/2: done", "block 2/2: done"]


def test_factorizes_matches_plan_rule(tiny_llama):
    mats = linear_matrices(tiny_llama)
    plan = allocate(tiny_llama, 0.5)
    assert all(factorizes(r, next(m.shape for m in mats if m.name == n)) for n, r in plan.ranks)


def test_tiny_models_without_a_tokenizer_still_compress_with_svd(tiny_llama):
    bare = dataclasses.replace(tiny_llama, tokenizer=None)
    c = compress(bare, allocate(bare, 0.5), "svd")
    assert len(c.plan) > 0
