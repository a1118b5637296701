"""``evaluate`` given bad input, and the checkpoints it must accept (a zip) or refuse (NaN weights)."""

from __future__ import annotations

import pytest
import torch

import lowrank_lab.cli.evaluate as evaluate_cli
from lowrank_lab import compress, save_compressed
from lowrank_lab.plan import RankPlan
from tests.unit.bad_input_support import LoadSpy, hostile, listing, run_cli

CASES = [
    ("seq-len 0", lambda p: ["--seq-len", "0"], "--seq-len 0 is too small: use --seq-len 2 or more", True),
    ("seq-len past the positions", lambda p: ["--seq-len", "100000"], "(256 positions)", True),
    (
        "GPT-2 past its 256 positions",
        lambda p: ["--model", "tiny-gpt2", "--seq-len", "300"],
        "tiny-gpt2 can read",
        True,
    ),
    ("max-blocks 0", lambda p: ["--max-blocks", "0"], "--max-blocks 0 is too small", True),
    ("unknown dtype", lambda p: ["--dtype", "fp8"], "--dtype 'fp8'", True),
    ("an encoder", lambda p: ["--model", "tiny-bert"], "no language-model head", False),
    ("not a zip", lambda p: ["--model", p["not.zip"]], "is not a valid zip file", False),
    ("a zip bomb", lambda p: ["--model", p["bomb.zip"]], "would expand", False),
    ("a zip that escapes", lambda p: ["--model", p["escape.zip"]], "unsafe file names", False),
    ("a FIFO", lambda p: ["--model", p["fifo"]], "FIFO", False),
]


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


@pytest.mark.parametrize(("argv", "fragment", "before_load"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate_refuses(capsys, monkeypatch, paths, argv, fragment, before_load):
    args = [str(a) for a in argv(paths)]
    if "--model" not in args:
        args += ["--model", "tiny-llama"]
    if "--seq-len" not in args:
        args += ["--seq-len", "16"]  # quick, where the row is not about it
    spy = LoadSpy(monkeypatch, evaluate_cli)
    before = listing(paths["root"])
    code, line, result = run_cli(capsys, "evaluate", *args)
    assert code == 2 and fragment in line, line
    assert result["ok"] is False
    assert listing(paths["root"]) == before
    if before_load:
        assert spy.calls == 0


@pytest.fixture(scope="module")
def checkpoint_zip(tmp_path_factory, tiny_llama):
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 8}), "svd")
    return save_compressed(compressed, tmp_path_factory.mktemp("ck") / "ck", zip=True)


def test_evaluate_reads_the_zip_that_load_compressed_reads(capsys, checkpoint_zip):
    code, _, result = run_cli(capsys, "evaluate", "--model", checkpoint_zip, "--seq-len", "32", "--max-blocks", "2")
    assert code == 0 and result["factorized_layers"] == 1 and result["perplexity"] > 1


def test_evaluating_a_checkpoint_with_nan_weights_says_so(capsys, tmp_path, tiny_llama):
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 8}), "svd")
    with torch.no_grad():
        compressed.model.model.layers[0].mlp.up_proj.A.weight[0, 0] = float("nan")
    folder = save_compressed(compressed, tmp_path / "nan-ck")
    code, line, result = run_cli(capsys, "evaluate", "--model", folder, "--seq-len", "32", "--max-blocks", "2")
    assert code == 2 and "so it has no perplexity" in line
    assert "model.layers.0.mlp.up_proj.A.weight" in line and result["ok"] is False
