"""Numbers that are not numbers: training stops at the first one, evaluation says so, JSON stays JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lowrank_lab import ModelSpec, NonFiniteError, load_model, strict_json
from lowrank_lab.data import builtin_source, prepare
from lowrank_lab.evaluate import perplexity
from lowrank_lab.finetune import LoraSettings, finetune
from tests.unit.bad_input_support import run_cli


@pytest.fixture(scope="module")
def data(tiny_llama):
    return prepare(builtin_source("domain-text"), tiny_llama.tokenizer, max_seq_len=32)


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_adapter():
    # In float16, alpha/r = 1e5 lets step 1 through (B starts at zero) and overflows step 2.
    half = load_model(ModelSpec("tiny-llama", dtype="float16"))
    data = prepare(builtin_source("domain-text"), half.tokenizer, max_seq_len=32)
    settings = LoraSettings(r=4, alpha=4e5, steps=8, eval_every=0, batch_size=2, max_seq_len=32)
    adapter = finetune(half, data, settings)
    report = adapter.report
    assert report.stopped and report.diverged and report.steps_done == 1
    assert "step 2 of 8: the training loss (nan) is not finite" in report.stop_reason
    assert "keeps the 1 good step" in report.stop_reason and "--lr" in report.stop_reason
    assert [step for step, _ in report.losses] == [1] and math.isfinite(report.losses[0][1])
    lora_b = [p for n, p in adapter.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.isfinite(p).all() for p in lora_b)
    assert any(p.abs().sum() > 0 for p in lora_b)  # step 1's update is kept, not thrown away


def test_a_gradient_norm_that_overflows_stops_training_instead_of_zeroing_every_step(tiny_llama, data):
    # alpha/r = 1e29: every gradient is finite, their squared norm is not; clipping by it would zero the step.
    report = finetune(tiny_llama, data, LoraSettings(r=4, alpha=4e29, steps=5, eval_every=0, max_seq_len=32)).report
    assert report.diverged and report.steps_done == 0 and "the gradient norm (inf) is not finite" in report.stop_reason


def test_a_finite_run_is_not_marked_as_diverged(tiny_llama, data):
    report = finetune(tiny_llama, data, LoraSettings(steps=2, eval_every=0, batch_size=2, max_seq_len=32)).report
    assert not report.stopped and not report.diverged and report.stop_reason == ""


def test_finetuning_a_nan_model_is_refused_before_training(tiny_llama, data):
    broken = load_model("tiny-llama")
    with torch.no_grad():
        broken.model.model.embed_tokens.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="before any training.*embed_tokens"):
        finetune(broken, data, LoraSettings(steps=2, eval_every=0, max_seq_len=32))


def test_the_cli_exits_2_with_the_reason_and_strict_json_when_training_diverges(capsys, tmp_path):
    code, line, result = run_cli(
        capsys, "finetune", "--model", "tiny-llama", "--steps", "20", "--max-seq-len", "32", "--eval-every", "0",
        "--batch-size", "2", "--r", "4", "--alpha", "4e29", "--out", tmp_path / "adapter",
    )  # fmt: skip
    assert code == 2 and "training stopped at step 1 of 20: the gradient norm (inf)" in line and "saved to" in line
    assert result["ok"] is False and result["diverged"] is True and result["steps_done"] == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()  # the last good adapter is kept


def test_perplexity_of_a_nan_model_names_the_damaged_weight(tiny_llama):
    broken = load_model("tiny-llama")
    with torch.no_grad():
        broken.model.model.layers[1].self_attn.o_proj.weight[3, 3] = float("inf")
    text = "The quick brown fox jumps over the lazy dog. " * 40
    with pytest.raises(NonFiniteError, match=r"layers\.1\.self_attn\.o_proj\.weight"):
        perplexity(broken.model, broken.tokenizer, text, seq_len=32, max_blocks=2)
    assert math.isfinite(perplexity(tiny_llama.model, tiny_llama.tokenizer, text, seq_len=32, max_blocks=2))


@pytest.mark.parametrize(
    ("value", "expected", "reasons"),
    [
        ({"a": float("nan")}, {"a": None}, {"a": "NaN"}),
        ({"a": [1.0, float("inf")]}, {"a": [1.0, None]}, {"a[1]": "+infinity"}),
        ({"f": {"p": -math.inf}}, {"f": {"p": None}}, {"f.p": "-infinity"}),
        ({"ok": 1.5, "n": None}, {"ok": 1.5, "n": None}, {}),
    ],
)
def test_strict_json_writes_null_and_the_reason(value, expected, reasons):
    text = strict_json.dumps(value)
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    found = parsed.pop(strict_json.NON_FINITE_KEY, {})
    assert parsed == expected
    assert set(found) == set(reasons) and all(reasons[k] in found[k] for k in reasons)
