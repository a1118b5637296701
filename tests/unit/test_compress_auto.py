"""The auto allocator: the Lagrangian over measured costs, the loss gradients, the budget, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank_lab import CalibrationSettings, allocate, compress
from lowrank_lab.compress.auto import lagrangian_plan
from lowrank_lab.compress.calibration import calibration_blocks
from lowrank_lab.compress.decompositions import linear_matrices, whitened_decompositions
from lowrank_lab.compress.sensitivity import calibration_loss, output_fisher
from lowrank_lab.matrices import WeightMatrix

CAL = CalibrationSettings(samples=4, seq_len=64)


def matrix(name: str, shape: tuple[int, int]) -> WeightMatrix:
    return WeightMatrix(name=name, kind=name, layer=None, shape=shape, module_type="Linear", is_embedding=False)


def test_lagrangian_spends_parameters_where_dropping_costs_most():
    mats = [matrix("cheap", (64, 64)), matrix("dear", (64, 64))]
    decay = 0.9 ** np.arange(64)
    costs = {"cheap": decay, "dear": 100 * decay}
    plan = lagrangian_plan(mats, costs, keep=0.5)
    kept = sum(r * 128 for _, r in plan.ranks) + sum(m.params for m in mats if plan.get(m.name) is None)
    assert kept <= 0.5 * 2 * 64 * 64
    assert plan.get("cheap") < (plan.get("dear") or 64)
    # Equal costs: the same rank for both.
    even = lagrangian_plan(mats, {"cheap": decay, "dear": decay}, keep=0.5)
    assert even.get("cheap") == even.get("dear")


def test_lagrangian_leaves_a_matrix_dense_when_factors_cost_more_than_they_save():
    mats = [matrix("flat", (64, 64)), matrix("steep", (64, 64))]
    costs = {"flat": np.full(64, 1.0), "steep": 0.5 ** np.arange(64)}
    plan = lagrangian_plan(mats, costs, keep=0.6)
    assert plan.get("flat") is None  # dense: any rank below break-even loses most of a flat spectrum
    assert plan.get("steep") is not None


def test_output_fisher_matches_autograd(tiny_llama):
    name = "model.layers.1.self_attn.o_proj"
    decs = {name: whitened_decompositions(tiny_llama, CAL)[name]}
    blocks = calibration_blocks(tiny_llama, CAL)[:2]
    fisher = output_fisher(tiny_llama.copy(), decs, blocks, batch_size=1)[name]
    # The same by hand: the gradient of the mean loss at the layer's output, all blocks at once.
    model = tiny_llama.copy()
    outputs = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: outputs.append(o))
    embeds = model.get_input_embeddings()(blocks).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = model(inputs_embeds=embeds, labels=blocks).loss
        (g,) = torch.autograd.grad(loss, outputs[0])
    handle.remove()
    gu = g.reshape(-1, g.shape[-1]).double() @ decs[name].u.double()  # (tokens, k)
    expected = (gu.square().sum(0) / (blocks.shape[0] * (blocks.shape[1] - 1))).numpy()
    assert np.allclose(fisher, expected, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("keep", [0.4, 0.7])
def test_auto_fits_the_budget_and_is_no_worse_than_uniform_on_calibration(tiny_llama, keep):
    auto = allocate(tiny_llama, keep, "auto", calibration=CAL)
    uniform = allocate(tiny_llama, keep, "uniform")
    fig = compress(tiny_llama, auto, "whitened", CAL).params.as_dict()
    assert fig["linear_params_compressed"] <= keep * fig["linear_params_dense"]
    blocks = calibration_blocks(tiny_llama, CAL)
    losses = [calibration_loss(compress(tiny_llama, p, "whitened", CAL).model, blocks) for p in (auto, uniform)]
    assert losses[0] <= losses[1] + 1e-9
    assert {n for n, _ in auto.ranks} <= {m.name for m in linear_matrices(tiny_llama)}


def test_auto_reuses_gradients_across_budgets(tiny_gpt2):
    settings = CalibrationSettings(samples=2, seq_len=32)
    messages: list[str] = []
    allocate(tiny_gpt2, 0.5, "auto", calibration=settings, progress=lambda d, t, m: messages.append(m))
    assert "loss gradients" in messages
    messages.clear()
    allocate(tiny_gpt2, 0.3, "auto", calibration=settings, progress=lambda d, t, m: messages.append(m))
    assert "loss gradients" not in messages and "calibration statistics" not in messages


def test_auto_explains_its_choice_with_each_candidates_calibration_loss(tiny_llama):
    from lowrank_lab.compress import allocate_explained
    from lowrank_lab.compress.auto import SCORE_BLOCKS
    from lowrank_lab.compress.results import plan_linear_params

    report = allocate_explained(tiny_llama, 0.5, "auto", calibration=CAL)
    assert report.strategy == "auto" and report.keep == 0.5
    assert [c.name for c in report.candidates] == ["loss-weighted", "uniform"]
    assert report.plan == allocate(tiny_llama, 0.5, "auto", calibration=CAL)
    blocks = calibration_blocks(tiny_llama, CAL)[:SCORE_BLOCKS]
    matrices = linear_matrices(tiny_llama)
    for c in report.candidates:  # each score is the loss of that plan compressed, on the scoring blocks
        model = compress(tiny_llama, c.plan, "whitened", CAL).model
        assert c.calibration_loss == pytest.approx(calibration_loss(model, blocks), rel=1e-6)
        assert c.linear_params == plan_linear_params(matrices, c.plan) <= 0.5 * sum(m.params for m in matrices)
    losses = [c.calibration_loss for c in report.candidates]
    assert report.chosen == int(np.argmin(losses)) and report.winner.calibration_loss == min(losses)
    assert "calibration blocks" in report.scoring and report.to_dict()["candidates"][report.chosen]["chosen"]


def test_uniform_and_keep_everything_have_one_candidate(tiny_llama):
    from lowrank_lab.compress import allocate_explained

    uniform = allocate_explained(tiny_llama, 0.5, "uniform")
    assert len(uniform.candidates) == 1 and uniform.plan == allocate(tiny_llama, 0.5, "uniform")
    assert len(allocate_explained(tiny_llama, 1.0, "auto").plan) == 0


def test_auto_scoring_reports_progress_in_order(tiny_llama):
    events: list[tuple[int, int, str]] = []
    allocate(tiny_llama, 0.5, "auto", calibration=CAL, progress=lambda *e: events.append(e))
    scoring = [e for e in events if e[2].startswith("scoring candidate")]
    assert any("(uniform): calibration loss" in m for _, _, m in scoring)
    fractions = [d / t for d, t, _ in scoring]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
