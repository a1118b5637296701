"""LoRA extraction: a real PEFT adapter that turns the base into the tuned model, within the predicted error."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from lowrank_lab.errors import InvalidRankPlan, OutputError, SettingsError
from lowrank_lab.extraction import ExtractionSettings, estimate_plan, extract_lora, extraction_plan, plan_budget
from lowrank_lab.extraction.adapter_files import ADAPTER_WEIGHTS, lora_config
from lowrank_lab.plan import RankPlan
from lowrank_lab.spectra.delta import model_delta
from lowrank_lab.spectra.sources import ModuleSource
from tests.unit.delta_support import logits, lora_merged

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def pair(tiny_llama):
    tuned = lora_merged(tiny_llama.model, 8, ALL)
    base, tuned_src = ModuleSource(tiny_llama.model, None, "tiny-llama"), ModuleSource(tuned, None, "tuned")
    return base, tuned_src, model_delta(base, tuned_src, cache=False), tuned


def _load(tiny, folder):
    return PeftModel.from_pretrained(tiny.copy(), str(folder))


def test_full_energy_reproduces_the_tuned_logits(tiny_llama, pair, tmp_path):
    base, tuned_src, delta, tuned = pair
    result = extract_lora(base, tuned_src, delta, ExtractionSettings("energy", 1.0), folder=tmp_path / "a")
    assert set(result.plan.as_dict().values()) == {8} and len(result.plan) == 14
    assert result.estimate.relative_error < 1e-6 and result.measured_relative_error < 1e-6
    out = logits(_load(tiny_llama, tmp_path / "a"))
    assert torch.allclose(out, logits(tuned), atol=1e-5)
    assert not torch.allclose(out, logits(tiny_llama.model), atol=1e-3)  # the adapter did something
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["rank_pattern"] == config["alpha_pattern"] == result.plan.as_dict()
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert "energy of ΔW kept" in (tmp_path / "a" / "README.md").read_text()


@pytest.mark.parametrize("energy", [0.5, 0.8, 0.9])
def test_partial_energy_errors_are_what_the_singular_values_predict(tiny_llama, pair, tmp_path, energy):
    base, tuned_src, delta, tuned = pair
    result = extract_lora(base, tuned_src, delta, ExtractionSettings("energy", energy), folder=tmp_path / "a")
    est = result.estimate
    assert est.energy_kept >= energy and est.relative_error == pytest.approx(math.sqrt(1 - est.energy_kept))
    # Weight level: the factors lose exactly the dropped σᵢ² (Eckart–Young), matrix by matrix.
    assert result.measured_relative_error == pytest.approx(est.relative_error, rel=1e-6)
    for row in result.matrices:
        assert row.measured_error == pytest.approx(row.predicted_error, rel=1e-5, abs=1e-7)
    # Logit level: to first order the logits move by the same fraction of their change.
    l_base, l_tuned, l_adapted = logits(tiny_llama.model), logits(tuned), logits(_load(tiny_llama, tmp_path / "a"))
    ratio = float((l_adapted - l_tuned).norm() / (l_tuned - l_base).norm())
    assert 0.5 * est.relative_error <= ratio <= 1.5 * est.relative_error


def test_more_energy_keeps_more(pair):
    spectra = pair[2].spectra()
    errors = [estimate_plan(spectra, extraction_plan(spectra, ExtractionSettings("energy", e))).relative_error
              for e in (0.3, 0.6, 0.9, 1.0)]  # fmt: skip
    assert errors == sorted(errors, reverse=True)


def test_saved_tensor_names_are_the_ones_peft_writes(tiny_llama, pair, tmp_path):
    base, tuned_src, delta, tuned = pair
    norm = copy.deepcopy(pair[3])
    with torch.no_grad():
        norm.model.layers[0].input_layernorm.weight.add_(0.1)
    result = extract_lora(base, ModuleSource(norm, None, "t"), model_delta(base, ModuleSource(norm, None, "t"),
                          cache=False), ExtractionSettings("rank", 4), folder=tmp_path / "a")  # fmt: skip
    assert result.whole_modules == ("model.layers.0.input_layernorm",)
    assert result.stored_params == result.estimate.adapter_params + 64  # the norm's 64 weights ride along
    ours = {k: tuple(v.shape) for k, v in load_file(str(tmp_path / "a" / ADAPTER_WEIGHTS)).items()}
    config = LoraConfig.from_pretrained(str(tmp_path / "a"))
    peft_model = get_peft_model(tiny_llama.copy(), config)
    theirs = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    assert ours == theirs
    assert torch.allclose(logits(_load(tiny_llama, tmp_path / "a")), logits(norm), atol=0.2)


def test_gpt2_conv1d_layers(tiny_gpt2, tmp_path):
    tuned = lora_merged(tiny_gpt2.model, 3, ("c_attn", "c_fc", "c_proj"))
    base, t = ModuleSource(tiny_gpt2.model, None, "g"), ModuleSource(tuned, None, "t")
    result = extract_lora(
        base, t, model_delta(base, t, cache=False), ExtractionSettings("rank", 3), folder=tmp_path / "a"
    )
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    assert len(result.plan) == 8
    assert torch.allclose(logits(_load(tiny_gpt2, tmp_path / "a")), logits(tuned), atol=1e-5)


def test_a_change_past_break_even_is_carried_whole_exactly(tiny_llama, tmp_path):
    # A full-rank change of one matrix plus a norm and a bias-free embedding change.
    tuned = copy.deepcopy(tiny_llama.model)
    torch.manual_seed(3)
    with torch.no_grad():
        tuned.model.layers[0].self_attn.o_proj.weight.add_(0.01 * torch.randn(64, 64))
        tuned.model.layers[1].mlp.up_proj.weight.add_(0.01 * torch.randn(160, 2) @ torch.randn(2, 64))
        tuned.model.embed_tokens.weight[7].add_(0.05)
    base, t = ModuleSource(tiny_llama.model, None, "b"), ModuleSource(tuned, None, "t")
    result = extract_lora(base, t, model_delta(base, t, cache=False), ExtractionSettings("energy", 1.0),
                          folder=tmp_path / "a")  # fmt: skip
    assert result.plan.as_dict() == {"model.layers.1.mlp.up_proj": 2}
    # o_proj's full change is past break-even; the embedding goes whole with the head tied to it.
    assert set(result.whole_modules) == {"model.layers.0.self_attn.o_proj", "model.embed_tokens", "lm_head"}
    assert torch.allclose(logits(_load(tiny_llama, tmp_path / "a")), logits(tuned), atol=1e-5)


def test_budget_fits_and_spends_where_energy_is(pair):
    spectra = pair[2].spectra()
    changed = sum(sp.params for sp in spectra)
    previous = math.inf
    for budget in (0.05, 0.1, 0.2):
        plan = plan_budget(spectra, budget)
        est = estimate_plan(spectra, plan)
        assert est.adapter_params <= budget * changed
        assert est.relative_error <= previous
        previous = est.relative_error
    # Spending by energy per parameter beats the same rank everywhere with at least as many parameters.
    best = estimate_plan(spectra, plan_budget(spectra, 0.1))
    r = 1
    while (
        estimate_plan(spectra, extraction_plan(spectra, ExtractionSettings("rank", r))).adapter_params
        < best.adapter_params
    ):
        r += 1
    uniform = estimate_plan(spectra, extraction_plan(spectra, ExtractionSettings("rank", r)))
    assert best.relative_error <= uniform.relative_error
    with pytest.raises(SettingsError, match="below what rank 1 for every changed matrix needs"):
        plan_budget(spectra, 0.001)


@pytest.mark.parametrize(
    ("mode", "value", "words"),
    [
        ("energy", 0, "(0, 1]"),
        ("energy", 1.5, "(0, 1]"),
        ("energy", -0.2, "(0, 1]"),
        ("energy", math.nan, "(0, 1]"),
        ("budget", 0.0, "parameter budget"),
        ("budget", math.inf, "parameter budget"),
        ("budget", "0.5", "parameter budget"),
        ("rank", 0, "positive integer"),
        ("rank", 2.5, "positive integer"),
        ("rank", True, "positive integer"),
        ("svd", 0.5, "unknown extraction mode"),
    ],
)
def test_bad_settings_name_the_value(mode, value, words):
    with pytest.raises(SettingsError) as err:
        ExtractionSettings(mode, value)
    assert words in str(err.value)


def test_nothing_is_written_when_the_plan_is_bad_or_the_folder_is_not_ours(pair, tmp_path):
    base, tuned_src, delta, _ = pair
    with pytest.raises(InvalidRankPlan):
        extract_lora(base, tuned_src, delta, plan=RankPlan({"no.such": 2}), folder=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="notes.txt"):
            extract_lora(base, tuned_src, delta, ExtractionSettings("rank", 2), folder=mine, overwrite=overwrite)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    # An adapter folder written before is replaced only with overwrite.
    extract_lora(base, tuned_src, delta, ExtractionSettings("rank", 2), folder=tmp_path / "b")
    with pytest.raises(OutputError, match="already exists"):
        extract_lora(base, tuned_src, delta, ExtractionSettings("rank", 4), folder=tmp_path / "b")
    extract_lora(base, tuned_src, delta, ExtractionSettings("rank", 4), folder=tmp_path / "b", overwrite=True)
    assert json.loads((tmp_path / "b" / "adapter_config.json").read_text())["r"] == 4


def test_result_is_json_ready_and_unwritten_without_a_folder(pair):
    base, tuned_src, delta, _ = pair
    result = extract_lora(base, tuned_src, delta, ExtractionSettings("budget", 0.1))
    data = json.loads(json.dumps(result.as_dict()))
    assert (
        data["folder"] is None and data["mode"] == "budget" and data["adapter_params"] <= 0.1 * data["changed_params"]
    )
    assert len(result.matrix_records()) == 14


def test_lora_config_of_no_factors_still_builds():
    from lowrank_lab.extraction.adapter_files import AdapterTensors

    config = lora_config(AdapterTensors(factors={"x": (torch.zeros(4, 1), torch.zeros(1, 3))}), "b")
    assert config.rank_pattern == {"x": 1} and np.isclose(config.lora_alpha, 1)


def _change_with_spectrum(m, n, sigma, seed=0):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((m, len(sigma))))[0]
    v = np.linalg.qr(rng.standard_normal((n, len(sigma))))[0]
    return torch.from_numpy((u * sigma) @ v.T)


@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999])  # fast to barely decaying: the last needs the fallback
def test_top_factors_lose_exactly_the_dropped_energy_with_or_without_the_known_spectrum(decay):
    from lowrank_lab.extraction.factors import top_factors

    sigma = decay ** np.arange(300.0)
    delta = _change_with_spectrum(500, 300, sigma)
    exact = float(np.sqrt(np.square(sigma[12:]).sum()))
    for known in (None, sigma):
        b, a, s = top_factors(delta, 12, known)
        assert b.shape == (500, 12) and a.shape == (12, 300) and b.dtype == a.dtype == torch.float32
        assert np.allclose(s, sigma[:12], rtol=1e-6)
        residual = float(torch.linalg.vector_norm(delta - b.double() @ a.double()))
        assert residual == pytest.approx(exact, rel=1e-6)  # float32 factors round at ~1e-7


def test_top_factors_of_an_exactly_low_rank_change():
    from lowrank_lab.extraction.factors import top_factors

    sigma = np.r_[np.linspace(3, 1, 8), np.zeros(192)]
    delta = _change_with_spectrum(200, 600, sigma[:8], seed=1)
    b, a, s = top_factors(delta, 8, sigma)
    assert float(torch.linalg.vector_norm(delta - b.double() @ a.double())) < 1e-5
    with pytest.raises(ValueError, match="expected 200 singular values"):
        top_factors(delta, 8, sigma[:10])
    with pytest.raises(ValueError, match="outside 1..200"):
        top_factors(delta, 0)
