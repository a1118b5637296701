"""``compress --stream``: a model folder compressed block by block into a checkpoint folder.

The output goes through the ownership rules (:mod:`lowrank_lab.outputs`): checked before any
block runs, written into a staged sibling, never inside the source folder, nothing left behind
by a run that fails half-way.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowrank_lab import load_compressed
from lowrank_lab.cli import main
from lowrank_lab.outputs import MANIFEST

FAST = ["--samples", "2", "--seq-len", "32", "--keep", "0.6", "--allocate", "uniform"]


def _folder(loaded, folder):
    loaded.copy().save_pretrained(folder, max_shard_size="20KB")  # several shards
    loaded.tokenizer.save_pretrained(folder)
    return folder


def _run(capsys, *argv) -> tuple[int, dict, str]:
    code = main(["compress", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_a_streamed_checkpoint_loads_and_names_what_it_did(tiny_llama, tmp_path, capsys):
    src = _folder(tiny_llama, tmp_path / "src")
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    code, out, _ = _run(capsys, "--model", str(src), "--stream", *FAST, "--dtype", "bf16", "--out", str(tmp_path / "o"))
    assert code == 0 and out["ok"] and out["out"] == str(tmp_path / "o") and out["factorized"] > 0
    assert (tmp_path / "o" / MANIFEST).exists()  # written by lowrank_lab, so --overwrite may replace it
    model = load_compressed(tmp_path / "o").model
    assert next(model.parameters()).dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == out["figures"]["params_compressed"]
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == before  # the source is untouched
    code, out, err = _run(capsys, "--model", str(src), "--stream", *FAST, "--out", str(tmp_path / "o"))
    assert code == 2 and "--overwrite" in err  # an existing checkpoint needs --overwrite


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "needs --out"),
        (["--out", "{src}/inside"], "inside"),
        (["--out", "{tmp}/o", "--stages"], "--stages"),
        (["--out", "{tmp}/o", "--device", "cuda"], "cuda"),
        (["--out", "{tmp}/o", "--samples", "20000", "--seq-len", "32"], "calibration"),
    ],
)
def test_bad_streamed_runs_are_refused_before_any_block(tiny_llama, tmp_path, capsys, extra, message):
    if message == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = _folder(tiny_llama, tmp_path / "src")
    argv = [a.format(src=src, tmp=tmp_path) for a in extra]
    code, out, err = _run(capsys, "--model", str(src), "--stream", *FAST, *argv)
    assert code == 2 and not out["ok"] and message in err.lower() + err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing written anywhere


def test_a_run_that_fails_half_way_leaves_nothing_behind(tiny_llama, tmp_path, capsys):
    src = _folder(tiny_llama, tmp_path / "src")
    # Damage the last block only, so the first block is compressed and written before it fails.
    for shard in src.glob("*.safetensors"):
        tensors = load_file(shard)
        hit = [n for n in tensors if n.startswith("model.layers.1.mlp.down_proj")]
        if hit:
            tensors[hit[0]] = torch.full_like(tensors[hit[0]], float("nan"))
            save_file(tensors, shard, metadata={"format": "pt"})
    code, out, err = _run(capsys, "--model", str(src), "--stream", *FAST, "--out", str(tmp_path / "o"))
    assert code == 2 and not out["ok"] and "model.layers.1.mlp.down_proj.weight holds" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staged sibling
