"""Two models compared: ΔW spectra (a LoRA fine-tune's rank exactly), streaming from disk, bad pairs."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lowrank_lab.errors import ComparisonError
from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.delta import model_delta
from lowrank_lab.spectra.sources import ModuleSource, SafetensorsSource
from tests.unit.delta_support import lora_merged

TARGETS = ("q_proj", "v_proj", "up_proj")


def source(model, tokenizer=None, label="m"):
    return ModuleSource(model, tokenizer, label)


def test_a_lora_finetune_of_rank_r_changes_its_targets_by_rank_exactly_r(tiny_llama):
    """A real fine-tune (lowrank_lab's PEFT training loop), merged: ΔW has rank r, no more, no less."""
    from lowrank_lab.data import builtin_source, prepare
    from lowrank_lab.export.adapter import merge_adapter
    from lowrank_lab.finetune import LoraSettings, finetune

    settings = LoraSettings(r=3, alpha=6, targets=("q_proj", "v_proj"), steps=4, batch_size=2, max_seq_len=32,
                            learning_rate=5e-3, eval_examples=2)  # fmt: skip
    data = prepare(builtin_source("domain-text"), tiny_llama.tokenizer, settings.max_seq_len)
    tuned = merge_adapter(finetune(tiny_llama, data, settings))
    delta = model_delta(source(tiny_llama.model, label="base"), source(tuned, label="tuned"), cache=False)
    for d in delta.matrices:
        expected = 3 if d.name.endswith(("q_proj", "v_proj")) else 0
        assert d.rank == expected, (d.name, d.rank, d.spectrum.s[:5])
        if expected:
            assert 0 < d.relative_change < 0.5
            s = d.spectrum.s
            assert s[2] > 1e3 * s[3]  # a clear gap after the r-th value
        else:
            assert not d.changed and d.relative_change == 0
    assert [sp.name for sp in delta.spectra()] == [d.name for d in delta.matrices if d.rank]
    assert delta.vectors_changed == ()


@pytest.mark.parametrize(("name", "targets", "r"), [("tiny_llama", TARGETS, 5), ("tiny_gpt2", ("c_attn", "c_fc"), 2)])
def test_peft_merges_on_two_architectures(request, name, targets, r):
    loaded = request.getfixturevalue(name)
    tuned = lora_merged(loaded.model, r, targets)
    delta = model_delta(source(loaded.model), source(tuned, label="t"), cache=False)
    changed = {d.name: d.rank for d in delta.matrices if d.changed}
    assert changed and set(changed.values()) == {r}
    assert all(n.rsplit(".", 1)[-1] in targets for n in changed)
    d = delta.changed[0]
    w1 = dict(loaded.model.named_modules())[d.name].weight.detach().double()
    w2 = dict(tuned.named_modules())[d.name].weight.detach().double()
    direct = np.linalg.svd((w2 - w1).numpy(), compute_uv=False)  # Conv1D: the transpose, same σ
    assert np.allclose(d.spectrum.s[:r], direct[:r], rtol=1e-9)
    assert d.relative_change == pytest.approx(np.linalg.norm(w2 - w1) / np.linalg.norm(w1))
    assert delta.relative_change > 0


def test_a_compression_is_a_change_of_rank_full_minus_r(tiny_llama, tmp_path):
    from lowrank_lab import compress
    from lowrank_lab.plan import RankPlan

    name = "model.layers.0.mlp.up_proj"  # 160×64
    compressed = compress(tiny_llama, RankPlan({name: 20}), method="svd")
    delta = model_delta(source(tiny_llama.model), source(compressed.model, label="c"), cache=False)
    assert {d.name: d.rank for d in delta.changed} == {name: 64 - 20}
    # ΔW = W_r − W = −(the dropped directions): its largest singular value is W's σ₂₁.
    s = np.linalg.svd(tiny_llama.model.get_submodule(name).weight.double().numpy(), compute_uv=False)
    assert delta.get(name).spectrum.s[0] == pytest.approx(s[20], rel=1e-6)
    # σ₁(W₁) could not change that rank (every value of ΔW is far from the tolerance), so W₁'s
    # spectrum was not computed; with it in the cache (the Spectra page's), it is read.
    assert math.isnan(delta.get(name).base_spectral)
    store = SpectrumCache(tmp_path)
    store.put(weight_digest(tiny_llama.model.get_submodule(name).weight.detach()), s)
    cached = model_delta(source(tiny_llama.model), source(compressed.model, label="c"), cache=store)
    assert cached.get(name).base_spectral == pytest.approx(s[0], rel=1e-9) and cached.get(name).rank == 64 - 20


def test_base_top_singular_value_is_computed_when_it_decides_the_rank(tiny_llama):
    """A ΔW value between the tolerances the bounds ‖W₁‖_F/√k and ‖W₁‖_F on σ₁(W₁) give: σ₁(W₁) decides."""
    name = "model.layers.0.mlp.up_proj"  # 160×64
    w = tiny_llama.model.get_submodule(name).weight.detach().double()
    s_w = np.linalg.svd(w.numpy(), compute_uv=False)
    eps = float(torch.finfo(torch.float32).eps)
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((160, 2)))
    v, _ = np.linalg.qr(rng.standard_normal((64, 2)))
    top = 0.1 * s_w[0]
    norm = float(np.linalg.norm(s_w))
    low, true, high = (160 * eps * max(x, top) for x in (norm / 8, s_w[0], norm))  # the tolerances
    assert low < true < high
    for small, rank in (((low + true) / 2, 1), ((true + high) / 2, 2)):  # below / above the true one
        tuned = copy.deepcopy(tiny_llama.model)
        change = torch.from_numpy((u * np.array([top, small])) @ v.T)
        with torch.no_grad():
            tuned.get_submodule(name).weight.copy_((w + change).float())
        d = model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=False).get(name)
        assert d.base_spectral == pytest.approx(s_w[0], rel=1e-9)
        assert d.rank == rank


def test_streaming_from_safetensors_gives_the_same_spectra(tiny_llama, tmp_path):
    tuned = lora_merged(tiny_llama.model, 4, TARGETS)
    tiny_llama.model.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    in_memory = model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=False)
    streamed = model_delta(SafetensorsSource(tmp_path / "base"), SafetensorsSource(tmp_path / "tuned"), cache=False)
    # Files list tensors by name (layer 10 after layer 2); the model lists them in module order.
    assert sorted(d.name for d in streamed.matrices) == sorted(d.name for d in in_memory.matrices)
    for b in streamed.matrices:
        a = in_memory.get(b.name)
        assert a.rank == b.rank and np.allclose(a.spectrum.s, b.spectrum.s, rtol=1e-12, atol=0)
    # And the streamed base against the in-memory tuned model: the sources mix.
    mixed = model_delta(SafetensorsSource(tmp_path / "base"), source(tuned, label="t"), cache=False)
    assert {d.name: d.rank for d in mixed.matrices} == {d.name: d.rank for d in in_memory.matrices}


def test_changed_norms_are_listed(tiny_llama):
    tuned = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        tuned.model.layers[1].post_attention_layernorm.weight.mul_(1.5)
    delta = model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=False)
    assert delta.vectors_changed == ("model.layers.1.post_attention_layernorm.weight",)
    assert not delta.changed


def test_delta_spectra_are_cached_by_content(tiny_llama, tmp_path):
    from lowrank_lab.spectra import SpectrumCache

    tuned = lora_merged(tiny_llama.model, 2, ("q_proj",))
    cache = SpectrumCache(tmp_path)
    first = model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=cache)
    # The two changed q_proj's ΔW; their base weights' σ₁ could not change the rank (a clean rank-2
    # change), so no base spectrum was computed; unchanged matrices need no SVD.
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    again = model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=cache)
    assert [d.spectrum.digest for d in again.changed] == [d.spectrum.digest for d in first.changed]


# --- bad pairs: each a clear message before any SVD ---------------------------------------------


def _llama(**overrides) -> LlamaForCausalLM:
    config = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)  # fmt: skip
    config.update(overrides)
    cfg = LlamaConfig(**config)
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: _llama(intermediate_size=128), ["differ in shape", "model.layers.0.mlp.gate_proj 160×64 vs 128×64"]),
        (lambda: _llama(num_hidden_layers=3), ["not in tiny", "model.layers.2.self_attn.q_proj"]),
        (lambda: _llama(vocab_size=600), ["vocabularies differ", "512", "600"]),
    ],
)
def test_mismatched_models(tiny_llama, make, words):
    with pytest.raises(ComparisonError) as err:
        model_delta(source(tiny_llama.model, label="tiny"), source(make(), label="other"), cache=False)
    for w in words:
        assert w in str(err.value)


def test_mismatched_architectures(tiny_llama, tiny_gpt2):
    with pytest.raises(ComparisonError, match="LlamaForCausalLM .* GPT2LMHeadModel"):
        model_delta(source(tiny_llama.model, label="a"), source(tiny_gpt2.model, label="b"), cache=False)


def test_mismatched_tokenizers(tiny_llama, tmp_path):
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tiny_llama.tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two tokens swapped
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    other = PreTrainedTokenizerFast(tokenizer_file=str(path))
    tuned = lora_merged(tiny_llama.model, 2, ("q_proj",))
    with pytest.raises(ComparisonError, match="tokenizers .* differ in 2 tokens"):
        model_delta(source(tiny_llama.model, tiny_llama.tokenizer, "a"), source(tuned, other, "b"), cache=False)


def test_the_same_model_twice(tiny_llama):
    with pytest.raises(ComparisonError, match="identical weights"):
        model_delta(
            source(tiny_llama.model, label="a"), source(copy.deepcopy(tiny_llama.model), label="b"), cache=False
        )


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_weight(tiny_llama, bad):
    tuned = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        tuned.model.layers[1].mlp.down_proj.weight[3, 5] = bad
    with pytest.raises(ComparisonError, match=r"model.layers.1.mlp.down_proj of t holds 1 non-finite"):
        model_delta(source(tiny_llama.model), source(tuned, label="t"), cache=False)


def test_a_compressed_checkpoint_folder_is_refused_for_streaming(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"lowrank": {}, "model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    from lowrank_lab.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="compressed checkpoint"):
        SafetensorsSource(tmp_path)


def test_open_source_streams_folders_and_loads_the_rest(tiny_llama, tmp_path):
    from lowrank_lab import compress, save_compressed
    from lowrank_lab.plan import RankPlan
    from lowrank_lab.spectra.sources import open_source

    tiny_llama.model.save_pretrained(tmp_path / "dense")
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 10}), method="svd")
    save_compressed(compressed, tmp_path / "compressed")
    assert isinstance(open_source(str(tmp_path / "dense")), SafetensorsSource)
    assert isinstance(open_source(str(tmp_path / "dense" / "model.safetensors")), SafetensorsSource)
    assert isinstance(open_source("tiny-llama"), ModuleSource)
    # A compressed checkpoint is loaded, and its factorized layer compares as the product B·A.
    c = open_source(str(tmp_path / "compressed"))
    assert isinstance(c, ModuleSource)
    delta = model_delta(open_source(str(tmp_path / "dense")), c, cache=False)
    assert {d.name: d.rank for d in delta.changed} == {"model.layers.0.mlp.up_proj": 64 - 10}


@pytest.mark.builtin
def test_the_builtin_model_is_streamed_from_its_converted_folder():
    from lowrank_lab.spectra.sources import open_source

    source = open_source("smollm2-135m")
    assert isinstance(source, SafetensorsSource)
    assert len(source.matrices()) == 211 and source.facts.architecture == "LlamaForCausalLM"
    assert source.matrix("model.layers.0.mlp.down_proj").shape == (576, 1536)


def test_a_bfloat16_copy_is_a_change_at_bfloat16_rounding_only(tiny_llama):
    """Saving a fine-tune in bfloat16 rounds every weight; that rounding is not a change of rank."""
    tuned = lora_merged(tiny_llama.model, 3, ("q_proj",), scale=0.5).to(torch.bfloat16)
    delta = model_delta(source(tiny_llama.model), source(tuned, label="bf16"), cache=False)
    ranks = {d.name: d.rank for d in delta.changed}
    assert len(ranks) == 15  # every matrix differs by rounding
    assert all(r == (3 if n.endswith("q_proj") else 0) for n, r in ranks.items()), ranks
