"""``python -m lowrank_lab compress``: budget or plan → compressed model, figures in JSON, checkpoint on disk."""

from __future__ import annotations

import json

import pytest
import torch

from lowrank_lab import load_compressed
from lowrank_lab.cli import main

FAST = ["--samples", "4", "--seq-len", "32", "--eval-seq-len", "32", "--eval-blocks", "2", "--max-new-tokens", "4"]


def _run(capsys, *argv) -> tuple[int, dict]:
    code = main(["compress", "--model", "tiny-llama", *FAST, "--json", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_measures_and_writes_a_checkpoint_that_evaluates_the_same(tmp_path, capsys):
    code, out = _run(capsys, "--keep", "0.6", "--allocate", "uniform", "--out", str(tmp_path / "ckpt"))
    assert code == 0 and out["ok"] and out["method"] == "whitened" and out["factorized"] > 0
    f = out["figures"]
    kept = f["linear_params_compressed"] / f["linear_params_dense"]
    assert kept <= 0.6 + 0.02  # the budget holds (ranks are whole numbers)
    assert f["params_compressed"] < f["params_dense"] and f["perplexity_compressed"] > 1
    assert out["calibration"] == {"text": "built-in pydoc_data calibration split", "samples": 4, "seq_len": 32}
    assert len(out["generations"]) == 3 and out["out"] == str(tmp_path / "ckpt")

    reloaded = load_compressed(tmp_path / "ckpt").model
    code = main(["evaluate", "--model", str(tmp_path / "ckpt"), "--seq-len", "32", "--max-blocks", "2", "--json"])
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and evaluated["perplexity"] == pytest.approx(f["perplexity_compressed"], rel=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == f["params_compressed"]


def test_a_plan_file_and_fp16_zip(tmp_path, capsys):
    plan = {"model.layers.0.mlp.up_proj": 8, "model.layers.1.self_attn.q_proj": 4}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, out = _run(
        capsys, "--plan", str(tmp_path / "plan.json"), "--method", "svd", "--no-eval",
        "--out", str(tmp_path / "ckpt"), "--dtype", "fp16", "--zip",
    )  # fmt: skip
    assert code == 0 and out["factorized"] == 2 and out["out"].endswith(".zip")
    assert "perplexity_dense" not in out["figures"] and "generations" not in out
    model = load_compressed(out["out"]).model
    assert model.model.layers[0].mlp.up_proj.rank == 8
    assert next(model.parameters()).dtype == torch.float16


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--keep", "1.5"], "1.5"),
        (["--keep", "0"], "0"),
        (["--plan", "missing.json"], "does not exist"),
        (["--calibration-text", "missing.txt"], "does not exist"),
        (["--samples", "4000", "--seq-len", "256", "--allocate", "uniform"], "tokens"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    code, out = _run(capsys, *argv)
    assert code == 2 and not out["ok"] and message in out["error"]


def test_a_plan_naming_modules_the_model_lacks(tmp_path, capsys):
    (tmp_path / "plan.json").write_text(json.dumps({"model.layers.9.mlp.up_proj": 4}))
    code, out = _run(capsys, "--plan", str(tmp_path / "plan.json"), "--no-eval")
    assert code == 2 and "model.layers.9.mlp.up_proj" in out["error"]


def test_an_existing_folder_needs_overwrite(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    assert _run(capsys, "--keep", "0.8", "--allocate", "uniform", "--no-eval", "--out", str(folder))[0] == 0
    code, out = _run(capsys, "--keep", "0.8", "--allocate", "uniform", "--no-eval", "--out", str(folder))
    assert code == 2 and "overwrite" in out["error"]
    assert (
        _run(capsys, "--keep", "0.8", "--allocate", "uniform", "--no-eval", "--out", str(folder), "--overwrite")[0] == 0
    )
