"""The auto allocator: the Lagrangian over measured costs, the loss gradients, the budget, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank_lab import CalibrationSettings, allocate, compress
from lowrank_lab.compress import allocate_explained
from lowrank_lab.compress.auto import SCORE_BLOCKS, component_costs, lagrangian_plan, layer_costs
from lowrank_lab.compress.calibration import calibration_blocks
from lowrank_lab.compress.costs import streamed_costs
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.engine import EngineSettings
from lowrank_lab.compress.sources import MemorySource
from lowrank_lab.compress.walk import batches_of, prepared_skeleton
from lowrank_lab.loss import block_batches, mean_next_token_loss
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


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_recomputed_block_inputs_and_sliced_logits_give_the_same_costs(request, model, monkeypatch):
    """Keeping fewer block inputs on the way up (recomputed on the way down), and taking the
    head's loss a row at a time, change no cost."""
    from lowrank_lab import loss

    loaded = request.getfixturevalue(model)
    ids = calibration_blocks(loaded, CalibrationSettings(samples=4, seq_len=32))
    names = [m.name for m in linear_matrices(loaded)]
    runs = []
    for every in (1, 2):  # every block's input kept; only block 0's (block 1's recomputed)
        source = MemorySource(loaded)
        model_, layout = prepared_skeleton(source, torch.device("cpu"))
        runs.append(streamed_costs(model_, layout, source, batches_of(ids, 2), names, "cpu", every=every))
        monkeypatch.setattr(loss, "LOGITS_BYTES", 1)  # the second run: one row's logits per forward
    assert runs[0].keys() == runs[1].keys() == set(names)
    for name in names:
        assert np.allclose(runs[0][name].cost, runs[1][name].cost, rtol=1e-5, atol=1e-12)
        assert np.array_equal(runs[0][name].sigma, runs[1][name].sigma)


def test_streamed_loss_costs_match_autograd(tiny_llama):
    """The block-by-block backward pass gives, per whitened component, mean_t (σᵢ uᵢᵀ g_t)² with
    g_t the gradient of the mean calibration loss at the layer's output, computed here by hand."""
    name = "model.layers.0.self_attn.o_proj"
    settings = CalibrationSettings(samples=2, seq_len=64)
    costs = layer_costs(tiny_llama, settings)[name]
    blocks = calibration_blocks(tiny_llama, settings)
    model = tiny_llama.copy()
    inputs, outputs = [], []
    layer = model.get_submodule(name)

    def keep(module, args, output):
        inputs.append(args[0])
        outputs.append(output)

    handle = layer.register_forward_hook(keep)
    embeds = model.get_input_embeddings()(blocks).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = model(inputs_embeds=embeds, labels=blocks).loss
        (g,) = torch.autograd.grad(loss, outputs[0])
    handle.remove()
    x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()  # (tokens, in)
    w = layer.weight.detach().double()
    s_fac = torch.linalg.cholesky(
        x.T @ x + 1e-6 * float((x.T @ x).diagonal().mean()) * torch.eye(x.shape[1], dtype=torch.float64)
    )
    u, sigma, _ = torch.linalg.svd(w @ s_fac, full_matrices=False)
    assert np.allclose(costs.sigma, sigma.numpy(), rtol=1e-5, atol=1e-5 * float(sigma[0]))  # float32 activations
    gu = g.reshape(-1, g.shape[-1]).double() @ (u * sigma)  # (tokens, k)
    expected = (gu.square().sum(0) / (blocks.shape[0] * (blocks.shape[1] - 1))).numpy()
    big = expected > 1e-6 * expected.max()  # the tail's singular vectors are ill-determined
    assert np.allclose(costs.cost[big], expected[big], rtol=1e-3)
    assert np.allclose(component_costs(tiny_llama, settings)[name], costs.cost)


@pytest.mark.parametrize("keep", [0.4, 0.7])
def test_auto_fits_the_budget_and_returns_the_candidate_that_scored_best(tiny_llama, keep):
    report = allocate_explained(tiny_llama, keep, "auto", "whitened", CAL)
    auto = report.plan
    assert allocate(tiny_llama, keep, "auto", calibration=CAL) == auto
    uniform = allocate(tiny_llama, keep, "uniform")
    names = [c.name for c in report.candidates]
    assert names == ["loss-weighted", "uniform"] and report.candidates[1].plan == uniform
    losses = [c.calibration_loss for c in report.candidates]
    assert auto == report.candidates[report.chosen].plan and losses[report.chosen] == min(losses)
    # Each score is the calibration loss of that plan compressed on the dense model's activations.
    blocks = calibration_blocks(tiny_llama, CAL)[:SCORE_BLOCKS]
    scorer = EngineSettings(sequential=False, anchored=False)
    for c in report.candidates:
        model = compress(tiny_llama, c.plan, "whitened", CAL, engine=scorer).model
        assert mean_next_token_loss(model, block_batches(blocks, 2)) == pytest.approx(c.calibration_loss, rel=1e-6)
    fig = compress(tiny_llama, auto, "whitened", CAL).params
    assert fig.linear_compressed <= keep * fig.linear_dense
    assert {n for n, _ in auto.ranks} <= {m.name for m in linear_matrices(tiny_llama)}


def test_auto_reuses_gradients_across_budgets(tiny_gpt2):
    settings = CalibrationSettings(samples=2, seq_len=32)
    messages: list[str] = []
    allocate(tiny_gpt2, 0.5, "auto", calibration=settings, progress=lambda d, t, m: messages.append(m))
    assert any(m.startswith("loss gradients") for m in messages)
    messages.clear()
    allocate(tiny_gpt2, 0.3, "auto", calibration=settings, progress=lambda d, t, m: messages.append(m))
    assert not any(m.startswith("loss gradients") for m in messages)


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
    scorer = EngineSettings(sequential=False, anchored=False)  # compressed on the dense activations
    for c in report.candidates:  # each score is the loss of that plan compressed, on the scoring blocks
        model = compress(tiny_llama, c.plan, "whitened", CAL, engine=scorer).model
        assert c.calibration_loss == pytest.approx(mean_next_token_loss(model, block_batches(blocks, 2)), rel=1e-6)
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
    scoring = [e for e in events if e[2].startswith("compressing and scoring 2 candidates")]
    assert any(m.endswith("block 2/2: done") for _, _, m in scoring)
    fractions = [d / t for d, t, _ in scoring]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
