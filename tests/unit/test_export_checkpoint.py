"""The compressed checkpoint: what it holds, loading it back with parity, the standalone loader, size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lowrank_lab import (
    LowRankLinear,
    OutputError,
    RankPlan,
    load_compressed,
    load_model,
    save_compressed,
)
from lowrank_lab.comparison import EvalSettings, compare
from lowrank_lab.export import estimate_size
from tests.unit.export_support import compressed_model, logits

EVAL = EvalSettings(source="built-in evaluation split (pydoc_data)", seq_len=64, max_blocks=2, prompts=())


@pytest.fixture(scope="module")
def llama_compressed(tiny_llama):
    return compressed_model(tiny_llama, keep=0.5)


@pytest.fixture(scope="module")
def llama_comparison(tiny_llama, llama_compressed):
    return compare(tiny_llama, llama_compressed, replace(EVAL, latency_tokens=16, latency_repeats=1))


@pytest.mark.parametrize(
    ("name", "with_head"), [("tiny-llama", False), ("tiny-llama", True), ("tiny-gpt2", True), ("tiny-bert", False)]
)
def test_fp32_round_trip_gives_the_same_outputs(tmp_path, name, with_head):
    loaded = load_model(name)
    compressed = compressed_model(loaded, keep=0.5, with_head=with_head)
    folder = save_compressed(compressed, tmp_path / "ckpt")
    model = load_compressed(folder).model
    diff = (logits(model) - logits(compressed.model)).abs().max().item()
    assert diff <= 1e-5
    ranks = {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    assert ranks == compressed.plan.as_dict()
    assert not any(isinstance(m, torch.nn.Linear) and n in ranks for n, m in model.named_modules())


def test_checkpoint_holds_config_section_factors_plan_card_and_tokenizer(tmp_path, llama_compressed, llama_comparison):
    import lowrank_lab

    folder = save_compressed(llama_compressed, tmp_path / "ckpt", dtype="fp16", comparison=llama_comparison)
    names = sorted(p.name for p in folder.iterdir())
    assert {
        "config.json",
        "model.safetensors",
        "rank_plan.json",
        "README.md",
        "load_lowrank.py",
        "tokenizer.json",
    } <= set(names)
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]  # never pickle
    config = json.loads((folder / "config.json").read_text())
    section = config["lowrank"]
    assert config["model_type"] == "llama" and config["hidden_size"] == 64  # the original config is kept
    assert section["format"] == "lowrank_lab.compressed" and section["format_version"] == 1
    assert section["library_version"] == lowrank_lab.__version__
    assert section["method"] == "svd" and section["dtype"] == "float16" and section["calibration"] == {}
    assert section["ranks"] == llama_compressed.plan.as_dict()
    assert RankPlan.from_json((folder / "rank_plan.json").read_text()) == llama_compressed.plan

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    q = "model.layers.0.self_attn.q_proj"
    r = section["ranks"][q]
    assert shapes[f"{q}.A.weight"] == (r, 64) and shapes[f"{q}.B.weight"] == (64, r)
    assert f"{q}.weight" not in shapes
    assert "model.layers.0.input_layernorm.weight" in shapes  # untouched modules stay dense
    # The tied head shares the embedding, so the tensor is stored once.
    assert "model.embed_tokens.weight" in shapes and "lm_head.weight" not in shapes

    card = (folder / "README.md").read_text()
    f = llama_comparison.figures()
    assert f"{f['perplexity_dense']:.2f}" in card and f"{f['perplexity_compressed']:.2f}" in card
    assert "built-in evaluation split (pydoc_data), 128 tokens" in card
    assert f"{sum(p.numel() for p in llama_compressed.model.parameters()):,}" in card
    assert "linear-layer parameters | not measured | not measured" in card
    assert "svd" in card and "load_compressed" in card and "load_lowrank" in card


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_round_trip_is_exact_on_the_stored_values(tmp_path, llama_compressed, dtype):
    folder = save_compressed(llama_compressed, tmp_path / "ckpt", dtype=dtype)
    model = load_compressed(folder).model
    target = getattr(torch, dtype)
    assert next(model.parameters()).dtype == target
    mine = llama_compressed.model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, mine[name].to(target)), name
    diff = (logits(model.float()) - logits(llama_compressed.model)).abs().max().item()
    assert diff < (0.05 if dtype == "float16" else 0.3)  # rounding of the weights only


def test_load_model_reads_a_compressed_folder_with_its_tokenizer(tmp_path, llama_compressed):
    folder = save_compressed(llama_compressed, tmp_path / "ckpt", dtype="bf16")
    loaded = load_model(str(folder))
    assert loaded.task == "causal-lm" and loaded.tokenizer is not None
    assert next(loaded.model.parameters()).dtype == torch.float32  # load_model's spec dtype
    assert sum(isinstance(m, LowRankLinear) for m in loaded.model.modules()) == len(llama_compressed.plan)
    assert "compressed" in loaded.notes[0] and "bfloat16" in loaded.notes[0]
    assert (
        loaded.tokenizer("The assert statement")["input_ids"]
        == llama_compressed.tokenizer("The assert statement")["input_ids"]
    )
    also = load_model(str(folder / "model.safetensors"))
    assert sum(isinstance(m, LowRankLinear) for m in also.model.modules()) == len(llama_compressed.plan)


def test_size_on_disk_follows_the_parameter_count(tmp_path, tiny_llama):
    """80% of the linear parameters kept, fp16: at most kept params × 2 bytes + tokenizer + small overhead."""
    compressed = compressed_model(tiny_llama, keep=0.8)
    kept = sum(p.numel() for p in compressed.model.parameters())
    folder = save_compressed(compressed, tmp_path / "ckpt", dtype="fp16")
    weights = (folder / "model.safetensors").stat().st_size
    header = 8 + int.from_bytes((folder / "model.safetensors").read_bytes()[:8], "little")
    assert weights == kept * 2 + header  # nothing else: ties stored once, no padding
    estimate = estimate_size("compressed", "fp16", compressed=compressed)
    assert estimate.weight_bytes == kept * 2  # the page's figure, before writing
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= kept * 2 + estimate.tokenizer_bytes + 32 * 1024


def test_zip_holds_the_folder_under_one_root_and_loads_back(tmp_path, llama_compressed):
    path = save_compressed(llama_compressed, tmp_path / "my ckpt", zip=True)
    assert path == tmp_path / "my ckpt.zip" and (tmp_path / "my ckpt" / "config.json").exists()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert all(n.startswith("my-ckpt/") and ".." not in n and not n.startswith("/") for n in names)
    assert "my-ckpt/model.safetensors" in names
    model = load_compressed(path).model
    assert (logits(model) - logits(llama_compressed.model)).abs().max().item() <= 1e-5


def test_a_failed_export_leaves_nothing_behind(tmp_path, llama_compressed):
    class BrokenTokenizer:
        def save_pretrained(self, folder):
            Path(folder, "tokenizer.json").write_text("{")
            raise OSError("No space left on device")

    broken = type(llama_compressed)(**{**llama_compressed.__dict__, "tokenizer": BrokenTokenizer()})
    with pytest.raises(OSError, match="No space left"):
        save_compressed(broken, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_existing_folders_are_not_overwritten_unless_asked(tmp_path, llama_compressed):
    folder = save_compressed(llama_compressed, tmp_path / "ckpt")
    with pytest.raises(OutputError, match="already exists"):
        save_compressed(llama_compressed, folder)
    save_compressed(llama_compressed, folder, dtype="fp16", overwrite=True)
    assert json.loads((folder / "config.json").read_text())["lowrank"]["dtype"] == "float16"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folders left
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="did not write"):
        save_compressed(llama_compressed, other, overwrite=True)
    assert (other / "cat.jpg").exists()


def test_saving_does_not_change_the_compressed_model(tmp_path, llama_compressed):
    before = {k: v.clone() for k, v in llama_compressed.model.state_dict().items()}
    save_compressed(llama_compressed, tmp_path / "ckpt", dtype="fp16")
    after = llama_compressed.model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)


def test_standalone_loader_works_where_lowrank_lab_cannot_be_imported(tmp_path, llama_compressed):
    folder = save_compressed(llama_compressed, tmp_path / "ckpt")
    out = tmp_path / "logits.safetensors"
    # The project's own venv has lowrank_lab installed (editable), so a finder placed first on
    # sys.meta_path refuses it: any import of lowrank_lab by the loader, direct or indirect, fails.
    script = f"""
import importlib.abc
import sys
class _NoLowrankLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lowrank_lab":
            raise ImportError("lowrank_lab is not installed in this process")
        return None
sys.meta_path.insert(0, _NoLowrankLab())
try:
    import lowrank_lab
except ImportError:
    pass
else:
    raise SystemExit("lowrank_lab is importable here: " + lowrank_lab.__file__)
sys.path.insert(0, {str(folder)!r})
import torch
from safetensors.torch import save_file
from load_lowrank import load, LowRankLinear
model = load({str(folder)!r})
assert sum(isinstance(m, LowRankLinear) for m in model.modules()) == {len(llama_compressed.plan)}
ids = torch.arange(2 * 24).reshape(2, 24) % 500 + 4
with torch.no_grad():
    save_file({{"logits": model(input_ids=ids).logits.float().contiguous()}}, {str(out)!r})
print("standalone ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # -I: no PYTHONPATH, no user site, no current folder on sys.path; cwd is outside the repo.
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "standalone ok" in done.stdout
    theirs = load_file(str(out))["logits"]
    assert (theirs - logits(llama_compressed.model)).abs().max().item() <= 1e-5
