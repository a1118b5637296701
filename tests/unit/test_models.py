"""Loading: built-in, tiny, local folder, single safetensors file, hub ids, and every bad input."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from lowrank_lab import ModelLoadError, ModelSpec, load_model
from lowrank_lab.models import BUILTIN_MODELS, TINY_MODELS
from lowrank_lab.models import load as load_module


@pytest.mark.parametrize(
    ("name", "arch", "task"),
    [
        ("tiny-llama", "LlamaForCausalLM", "causal-lm"),
        ("tiny-gpt2", "GPT2LMHeadModel", "causal-lm"),
        ("tiny-bert", "BertModel", "encoder"),
    ],
)
def test_tiny_models_load_with_a_real_tokenizer(name, arch, task):
    loaded = load_model(name)
    assert loaded.architecture == arch
    assert loaded.task == task
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    ids = loaded.tokenizer("The assert statement", return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 1 and int(ids.max()) < loaded.config.vocab_size
    with torch.no_grad():
        out = loaded.model(ids)
    assert torch.isfinite(out[0]).all()


def test_tiny_models_are_reproducible_by_seed():
    a, b, c = (
        load_model(ModelSpec("tiny-llama", seed=1)),
        load_model(ModelSpec("tiny-llama", seed=1)),
        load_model("tiny-llama"),
    )
    wa, wb, wc = (m.model.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_dtype_is_applied():
    loaded = load_model(ModelSpec("tiny-gpt2", dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_copy_is_independent(tiny_llama):
    clone = tiny_llama.copy()
    with torch.no_grad():
        clone.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(
        clone.model.layers[0].mlp.up_proj.weight, tiny_llama.model.model.layers[0].mlp.up_proj.weight
    )
    assert clone.lm_head.weight is clone.model.embed_tokens.weight  # ties survive the copy


@pytest.mark.builtin
def test_builtin_minilm_loads_from_its_package():
    loaded = load_model("minilm-l6")
    assert loaded.architecture == "BertModel"
    assert loaded.task == "encoder"
    assert 22.5e6 < loaded.n_params < 23e6
    assert loaded.tokenizer is not None


@pytest.mark.builtin
def test_builtin_smollm2_loads_dequantized_and_cached(smollm2):
    assert smollm2.architecture == "LlamaForCausalLM"
    assert 134e6 < smollm2.n_params < 135e6
    assert any("dequantized" in note for note in smollm2.notes)
    assert getattr(smollm2.config, "quantization_config", None) is None
    # The converted float copy is in the cache, so the next load reads safetensors.
    from lowrank_lab.models.builtin import smollm2_folder

    folder = smollm2_folder()
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    again = load_model("smollm2-135m")
    for (n1, p1), (_, p2) in zip(smollm2.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p1, p2), n1
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = smollm2.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])


def _save(model_name: str, folder) -> None:
    loaded = load_model(model_name)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)


def test_local_folder_round_trip(tmp_path, tiny_gpt2):
    tiny_gpt2.model.save_pretrained(tmp_path)
    tiny_gpt2.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.architecture == "GPT2LMHeadModel"
    assert loaded.tokenizer is not None
    for (n, p1), (_, p2) in zip(tiny_gpt2.model.named_parameters(), loaded.model.named_parameters()):
        assert torch.equal(p1, p2), n


def test_single_safetensors_file_with_config_beside_it(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "weights-v2.safetensors")
    loaded = load_model(str(tmp_path / "weights-v2.safetensors"))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids).logits, tiny_llama.model(ids).logits)


def test_folder_without_tokenizer_loads_with_a_note(tmp_path, tiny_bert):
    tiny_bert.model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.tokenizer is None
    assert any("tokenizer" in n for n in loaded.notes)


# ---- bad input: each gives a ModelLoadError that names the problem and the fix ----


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelLoadError) as err:
        load_model("smollm3-giant")
    msg = str(err.value)
    assert "smollm3-giant" in msg
    for name in [*BUILTIN_MODELS, *TINY_MODELS]:
        assert name in msg


def test_empty_source_is_refused():
    with pytest.raises(ModelLoadError, match="no model given"):
        ModelSpec("  ")


def test_bad_dtype_is_refused():
    with pytest.raises(ModelLoadError, match="float8"):
        ModelSpec("tiny-llama", dtype="float8")


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="not an existing path"):
        load_model(str(tmp_path / "nowhere"))


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_folder_without_weights(tmp_path, tiny_llama):
    tiny_llama.config.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(str(tmp_path))


def test_truncated_safetensors_names_the_file(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated") as err:
        load_model(str(tmp_path))
    assert "model.safetensors" in str(err.value)


def test_corrupt_safetensors_header(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"x" * 32  # garbage where the JSON header starts
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_model(str(tmp_path))


def test_corrupt_config_json(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))


def test_single_file_without_config(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    target = tmp_path / "alone" / "w.safetensors"
    target.parent.mkdir()
    (tmp_path / "model.safetensors").rename(target)
    with pytest.raises(ModelLoadError, match="no config.json beside it"):
        load_model(str(target))


def test_single_file_that_does_not_match_its_config(tmp_path, tiny_llama, tiny_gpt2):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_gpt2.model.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").rename(tmp_path / "gpt2.safetensors")
    with pytest.raises(ModelLoadError, match="does not match its config.json"):
        load_model(str(tmp_path / "gpt2.safetensors"))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pkl"])
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(path))


def test_hub_id_while_offline_fails_fast_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face Hub") as err:
        load_model("someone/some-model-that-is-not-cached")
    assert time.perf_counter() - start < 30
    assert "--local-dir" in str(err.value)


def test_hub_id_without_network_fails_fast(monkeypatch):
    """With the offline switch off, the real network check decides (this machine has none)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if load_module._hub_reachable(timeout=2):
        pytest.skip("the Hugging Face Hub is reachable from here")
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face Hub"):
        load_model("someone/another-model")


def test_remote_code_is_off_by_default(tmp_path, tiny_llama):
    assert ModelSpec("x/y").trust_remote_code is False
    tiny_llama.model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    config["architectures"] = ["EvilModelForCausalLM"]
    config["model_type"] = "evil"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError):
        load_model(str(tmp_path))


def test_model_with_no_weight_matrices():
    from lowrank_lab import NoWeightMatricesError, compute_spectra, weight_matrices

    model = nn.Sequential(nn.LayerNorm(8), nn.ReLU())
    with pytest.raises(NoWeightMatricesError, match="no 2-D weight"):
        weight_matrices(model)
    with pytest.raises(NoWeightMatricesError):
        compute_spectra(model, cache=False)
