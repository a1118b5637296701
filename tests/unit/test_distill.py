"""End-to-end distillation of a compressed model's factors against the dense model."""

from __future__ import annotations

import json

import pytest
import torch

from lowrank_lab import CalibrationSettings, LowRankLinear, load_compressed
from lowrank_lab.cli import main
from lowrank_lab.comparison import EvalSettings
from lowrank_lab.compress import allocate, compress
from lowrank_lab.compress.distill import DistillSettings, distill, distill_blocks, factor_parameters
from lowrank_lab.compress.pipeline import CompressionJob, run_job
from lowrank_lab.compress.results import STAGE_DISTILLED, STAGE_REFIT
from lowrank_lab.errors import DataError, SettingsError
from lowrank_lab.export import save_compressed

CAL = CalibrationSettings(samples=4, seq_len=32)
FAST = DistillSettings(steps=24, lr=1e-3, batch_size=2)


def _compressed(loaded):
    return compress(loaded, allocate(loaded, 0.4, "uniform"), "whitened", CAL)


def _kl(loaded, model, ids) -> float:
    """Mean KL(dense ‖ model) per token over ``ids``."""
    with torch.no_grad():
        p = torch.log_softmax(loaded.model(input_ids=ids).logits.float(), -1)
        q = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_distillation_brings_the_model_closer_to_the_dense_one_and_moves_only_the_factors(tiny_llama):
    compressed = _compressed(tiny_llama)
    ids = distill_blocks(tiny_llama, FAST, CAL)[: FAST.steps * FAST.batch_size]  # the blocks it trains on
    held = distill_blocks(tiny_llama, FAST, CAL)[-8:]  # blocks it never sees in 24 steps of 2
    dense_before, before = _state(tiny_llama.model), _state(compressed.model)
    kl_seen, kl_held = _kl(tiny_llama, compressed.model, ids), _kl(tiny_llama, compressed.model, held)

    distilled, report = distill(tiny_llama, compressed, FAST, CAL)

    assert _kl(tiny_llama, distilled.model, ids) < 0.9 * kl_seen
    assert _kl(tiny_llama, distilled.model, held) < kl_held
    assert len(report.losses) == FAST.steps and report.tokens == FAST.steps * FAST.batch_size * CAL.seq_len
    after = _state(distilled.model)
    factors = {n for n, m in distilled.model.named_modules() if isinstance(m, LowRankLinear)}
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved == {f"{n}.{f}.weight" for n in factors for f in ("A", "B")}  # every factor, nothing else
    assert all(torch.equal(v, tiny_llama.model.state_dict()[k]) for k, v in dense_before.items())  # teacher untouched
    assert not any(p.requires_grad for p in tiny_llama.model.parameters())
    assert all(p.grad is None for p in distilled.model.parameters())
    assert distilled.plan == compressed.plan and distilled.params == compressed.params  # the budget holds
    assert distilled.calibration["distillation"] == FAST.describe() | {"tokens": report.tokens}


def test_distillation_is_deterministic(tiny_llama):
    settings = DistillSettings(steps=3, lr=1e-3, batch_size=2)
    a, _ = distill(tiny_llama, _compressed(tiny_llama), settings, CAL)
    b, _ = distill(tiny_llama, _compressed(tiny_llama), settings, CAL)
    for x, y in zip(factor_parameters(a.model), factor_parameters(b.model)):
        assert torch.equal(x, y)


def test_a_job_reports_the_distilled_stage_and_the_record_survives_a_checkpoint(tiny_llama, tmp_path):
    job = CompressionJob(
        keep=0.4,
        allocation="uniform",
        calibration=CAL,
        distill=DistillSettings(steps=4, lr=3e-3, batch_size=2),
        evaluation=EvalSettings(seq_len=32, max_blocks=4, prompts=()),
        stage_report=True,
    )
    result = run_job(tiny_llama, job)
    names = [f.stage for f in result.stages.stages]
    assert names[-2:] == [STAGE_REFIT, STAGE_DISTILLED]
    assert result.stages.stages[-1].perplexity == pytest.approx(result.comparison.compressed.perplexity, rel=1e-4)
    assert result.distillation is not None and len(result.distillation.losses) == 4 and "distill" in result.seconds
    path = save_compressed(result.compressed, tmp_path / "ck")
    assert load_compressed(path).calibration["distillation"]["steps"] == 4


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": -1}, "distillation steps must be an integer ≥ 0"),
        ({"steps": 2.5}, "distillation steps must be an integer"),
        ({"steps": True}, "distillation steps must be an integer"),
        ({"batch_size": 0}, "distillation batch_size must be an integer ≥ 1"),
        ({"lr": 0.0}, "learning rate must be a number in (0, 1)"),
        ({"lr": float("nan")}, "learning rate must be a number in (0, 1)"),
        ({"lr": 2}, "learning rate must be a number in (0, 1)"),
        ({"lr": "1e-4"}, "learning rate must be a number in (0, 1)"),
    ],
)
def test_bad_distillation_settings_are_named(kwargs, fragment):
    with pytest.raises(SettingsError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        DistillSettings(**kwargs)


def test_a_job_that_cannot_be_distilled_is_refused_before_any_work(tiny_llama, tiny_bert):
    encoder = CompressionJob(keep=0.5, allocation="uniform", method="svd", distill=DistillSettings(2), evaluation=None)
    with pytest.raises(SettingsError, match="encoder with none"):
        run_job(tiny_bert, encoder, sink=lambda event: pytest.fail("work started"))
    short = CalibrationSettings(samples=1, seq_len=32, text="a few words, far fewer than one batch of blocks. " * 8)
    too_big = CompressionJob(
        keep=0.5, allocation="uniform", calibration=short, distill=DistillSettings(2, batch_size=64), evaluation=None
    )
    with pytest.raises(DataError, match="--distill-batch"):
        run_job(tiny_llama, too_big, sink=lambda event: pytest.fail("work started"))


def test_the_command_line_distils_and_reports_it(capsys):
    argv = ["compress", "--model", "tiny-llama", "--keep", "0.5", "--allocate", "uniform", "--samples", "4"]
    argv += ["--seq-len", "32", "--no-eval", "--distill", "3", "--distill-batch", "2", "--json", "--no-record"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    d = out["distillation"]
    assert d["steps"] == 3 and d["batch_size"] == 2 and len(d["losses"]) == 3 and d["tokens"] == 3 * 2 * 32
    assert "distill" in out["seconds"]


def test_a_distillation_that_diverges_puts_the_walk_s_factors_back_and_says_so(tiny_llama):
    compressed = _compressed(tiny_llama)
    factor = factor_parameters(compressed.model)[0]
    with torch.no_grad():
        factor[0, 0] = float("nan")  # the first forward gives NaN logits: the KL is not finite at step 1
    before = [p.detach().clone() for p in factor_parameters(compressed.model)]
    distilled, report = distill(tiny_llama, compressed, DistillSettings(steps=3, lr=1e-3, batch_size=1), CAL)
    assert "diverged at step 1" in report.stopped and "lower the learning rate" in report.stopped
    assert report.losses == () and report.tokens == 0
    for p, q in zip(factor_parameters(distilled.model), before):  # as the walk left them, the NaN too
        assert torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num())
    assert "distillation" not in distilled.calibration


def test_a_job_whose_plan_factorizes_nothing_keeps_its_model_and_says_why(tiny_llama):
    """With every layer dense (keep 1.0), the walk's model is kept and the distillation reports why it did nothing."""
    job = CompressionJob(
        keep=1.0, allocation="uniform", calibration=CAL, distill=DistillSettings(2, batch_size=2), evaluation=None
    )
    result = run_job(tiny_llama, job)
    assert result.compressed is not None and len(result.plan) == 0
    assert "no factorized layer" in result.distillation.stopped and result.distillation.losses == ()
    assert "distillation" not in result.compressed.calibration
    with pytest.raises(SettingsError, match="distillation steps are 0"):
        distill(tiny_llama, result.compressed, DistillSettings(0), CAL)
