"""The other exports: dense folder, PEFT adapter, adapter merged, rank_pattern, sizes, zips."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch

from lowrank_lab import LowRankLinear, load_compressed, load_model
from lowrank_lab.checkpoint import extract_zip
from lowrank_lab.export import (
    EXPORT_FORMATS,
    available_formats,
    densify,
    estimate_size,
    export,
    export_zip,
    merged_compressed,
    rank_pattern,
    save_adapter,
    save_dense,
    save_merged,
    save_rank_pattern,
)
from tests.unit.export_support import adapter_on_compressed, adapter_on_original, compressed_model, logits


@pytest.fixture(scope="module")
def on_original(tiny_llama):
    return adapter_on_original(tiny_llama)


@pytest.fixture(scope="module")
def on_compressed(tiny_llama):
    return adapter_on_compressed(tiny_llama)


def _n_low(model) -> int:
    return sum(isinstance(m, LowRankLinear) for m in model.modules())


@pytest.mark.parametrize(("name", "with_head"), [("tiny-llama", False), ("tiny-llama", True), ("tiny-gpt2", True)])
def test_dense_export_loads_with_plain_from_pretrained(tmp_path, name, with_head):
    from transformers import AutoModelForCausalLM

    loaded = load_model(name)
    compressed = compressed_model(loaded, keep=0.5, with_head=with_head)
    folder = save_dense(compressed, tmp_path / "dense")
    config = json.loads((folder / "config.json").read_text())
    assert "lowrank" not in config
    assert config.get("tie_word_embeddings", True) is not with_head  # a factorized head is untied
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert _n_low(model) == 0
    assert (logits(model) - logits(compressed.model)).abs().max().item() < 1e-4
    untied_head = model.get_output_embeddings().weight.numel() if with_head else 0
    assert sum(p.numel() for p in model.parameters()) == loaded.n_params + untied_head  # the original architecture
    assert _n_low(compressed.model) == len(compressed.plan)  # the compressed model is untouched


def test_densify_keeps_gpt2_conv1d_layout(tiny_gpt2):
    compressed = compressed_model(tiny_gpt2, keep=0.5)
    dense = densify(compressed.model)
    assert type(dense.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert dense.transformer.h[0].attn.c_attn.weight.shape == tiny_gpt2.model.transformer.h[0].attn.c_attn.weight.shape


def test_adapter_on_the_original_model_loads_with_peft(tmp_path, tiny_llama, on_original):
    from peft import PeftModel

    folder = save_adapter(on_original, tmp_path / "adapter", dtype="fp32")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "base").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["base_model_name_or_path"] == "tiny-llama"
    reloaded = PeftModel.from_pretrained(load_model("tiny-llama").copy(), str(folder))
    theirs, mine = logits(reloaded), logits(on_original.model)
    assert (theirs - mine).abs().max().item() <= 1e-5
    assert (mine - logits(tiny_llama.model)).abs().max().item() > 1e-3  # the adapter does change the model


def test_adapter_on_a_compressed_model_ships_its_base(tmp_path, on_compressed):
    from peft import PeftModel

    folder = save_adapter(on_compressed, tmp_path / "adapter")
    base = load_compressed(folder / "base").model
    assert _n_low(base) == len(on_compressed.compressed.plan)
    assert not any("lora" in n for n, _ in base.named_parameters())  # the base is clean
    reloaded = PeftModel.from_pretrained(base, str(folder))
    assert (logits(reloaded) - logits(on_compressed.model)).abs().max().item() <= 1e-5


def test_merged_into_a_compressed_model_keeps_the_ranks_and_the_outputs(tmp_path, on_compressed):
    before = logits(on_compressed.model)
    merged = merged_compressed(on_compressed)
    assert merged.plan == on_compressed.compressed.plan  # LoRA folded into the thin factors
    folder = save_merged(on_compressed, tmp_path / "merged", dtype="float32")
    model = load_compressed(folder).model
    assert {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)} == merged.plan.as_dict()
    assert (logits(model) - before).abs().max().item() <= 1e-4
    assert (logits(on_compressed.model) - before).abs().max().item() == 0  # the adapter is not changed
    assert any("lora_A" in n for n, _ in on_compressed.model.named_parameters())
    card = (folder / "README.md").read_text()
    assert "perplexity" in card and "not measured" in card  # training changed it; not carried over


def test_merged_into_the_original_model_is_a_plain_folder(tmp_path, on_original):
    from transformers import AutoModelForCausalLM

    folder = save_merged(on_original, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert (logits(model) - logits(on_original.model)).abs().max().item() <= 1e-4


def test_rank_pattern_drives_peft_lora_ranks(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model

    plan = compressed_model(tiny_llama, keep=0.5).plan
    path = save_rank_pattern(plan, tmp_path / "rank_pattern.json")
    kwargs = json.loads(path.read_text())
    assert kwargs == rank_pattern(plan)
    peft_model = get_peft_model(tiny_llama.copy(), LoraConfig(**kwargs))
    got = {
        name.removeprefix("base_model.model."): module.r["default"]
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and isinstance(getattr(module, "r", None), dict)
    }
    assert got == plan.as_dict()


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_every_export_zip_loads_back_and_its_size_was_announced(tmp_path, tiny_llama, on_compressed, fmt):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    compressed = on_compressed.compressed
    estimate = estimate_size(fmt, "fp16", compressed=compressed, adapter=on_compressed)
    data = export_zip(fmt, "../My export", "fp16", compressed=compressed, adapter=on_compressed)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        weights = sum(i.file_size for i in zf.infolist() if i.filename.endswith(".safetensors"))
        total = sum(i.file_size for i in zf.infolist())
    assert all(n.startswith("My-export/") for n in names)
    (tmp_path / "x.zip").write_bytes(data)
    root = extract_zip(tmp_path / "x.zip", tmp_path / "x") if fmt != "rank_pattern" else None
    if fmt == "compressed":
        model = load_compressed(root).model
    elif fmt in ("dense",):
        model = AutoModelForCausalLM.from_pretrained(str(root))
    elif fmt == "merged":
        model = load_compressed(root).model
    elif fmt == "adapter":
        model = PeftModel.from_pretrained(load_compressed(root / "base").model, str(root))
    else:
        assert sorted(names) == [
            "My-export/lowrank_lab_manifest.json",
            "My-export/rank_pattern.json",
            "My-export/rank_plan.json",
        ]
        assert estimate.total_bytes == 0
        return
    assert torch.isfinite(logits(model.float())).all()
    # Announced size: exact tensor bytes (the file adds only its JSON headers), plus the tokenizer.
    assert estimate.weight_bytes <= weights <= estimate.weight_bytes + 64 * 1024
    assert total <= estimate.total_bytes + 64 * 1024


def test_available_formats_follow_what_exists(tiny_llama, on_original):
    compressed = compressed_model(tiny_llama, keep=0.5)
    assert available_formats(None, None) == []
    assert available_formats(compressed, None) == ["compressed", "dense", "rank_pattern"]
    assert available_formats(None, on_original) == ["adapter", "merged"]


def test_exports_that_need_a_missing_artifact_say_where_to_make_it(tmp_path, on_original):
    from lowrank_lab import CheckpointError

    with pytest.raises(CheckpointError, match="Ranks page"):
        export("dense", tmp_path / "x", adapter=on_original)
    with pytest.raises(CheckpointError, match="unknown export format 'onnx'"):
        export("onnx", tmp_path / "x", adapter=on_original)
    with pytest.raises(CheckpointError, match="merging it gives a dense model"):
        merged_compressed(on_original)
    not_peft = type(on_original)(**{**on_original.__dict__, "model": load_model("tiny-llama").copy()})
    with pytest.raises(CheckpointError, match="not a PEFT model"):
        save_adapter(not_peft, tmp_path / "y")
    assert list(tmp_path.iterdir()) == []
