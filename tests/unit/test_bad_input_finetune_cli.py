"""``finetune`` given bad input: every option, data file, base and output checked before training.

A compressed base must have been made from ``--model`` (``--model`` defaults to it), a zip of
it works as the folder does, and an ``--out`` that is not ours is refused before any work.
"""

from __future__ import annotations

import pytest

import lowrank_lab.cli.finetune as finetune_cli
from lowrank_lab import compress, save_compressed
from lowrank_lab.plan import RankPlan
from tests.unit.bad_input_support import LoadSpy, hostile, listing, run_cli

FAST = ["--steps", "2", "--max-seq-len", "32", "--eval-every", "0", "--batch-size", "2"]


def _data(p, name, content):
    path = p["root"] / name
    path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
    return ["--data", path]


CASES = [
    (
        "steps with epochs",
        lambda p: ["--steps", "3", "--epochs", "1"],
        "--steps and --epochs cannot be used together",
        True,
    ),
    ("epochs inf", lambda p: ["--epochs", "inf"], "--epochs inf: not a finite number", True),
    ("epochs nan", lambda p: ["--epochs", "nan"], "not a finite number", True),
    ("epochs 1e9", lambda p: ["--epochs", "1e9"], "is outside (0, 10000]", True),
    ("alpha inf", lambda p: ["--alpha", "inf"], "--alpha inf: not a finite number", True),
    ("alpha 0", lambda p: ["--alpha", "0"], "--alpha 0 is outside (0, ∞)", True),
    ("lr 1", lambda p: ["--lr", "1"], "--lr 1 is outside (0, 1)", True),
    ("lr nan", lambda p: ["--lr", "nan"], "not a finite number", True),
    ("dropout 1", lambda p: ["--dropout", "1"], "--dropout 1 is outside [0, 1)", True),
    ("r 0", lambda p: ["--r", "0"], "--r 0 is too small", True),
    ("r past the model's width", lambda p: ["--r", "1000"], "LoRA rank r=1000 is above what", False),
    ("batch-size 0", lambda p: ["--batch-size", "0"], "--batch-size 0 is too small", True),
    ("max-seq-len 4", lambda p: ["--max-seq-len", "4"], "--max-seq-len 4 is too small", True),
    (
        "max-seq-len past GPT-2's positions",
        lambda p: ["--model", "tiny-gpt2", "--max-seq-len", "300"],
        "tiny-gpt2 can read (256 positions)",
        True,
    ),
    ("warmup -1", lambda p: ["--warmup", "-1"], "--warmup -1 is too small", True),
    ("eval-every -1", lambda p: ["--eval-every", "-1"], "--eval-every -1 is too small", True),
    ("seed -1", lambda p: ["--seed", "-1"], "--seed -1 is too small", True),
    ("targets empty", lambda p: ["--targets", ",,"], "names no layer kind", True),
    ("targets unknown", lambda p: ["--targets", "nope"], "no layers named nope", False),
    ("an encoder", lambda p: ["--model", "tiny-bert"], "no language-model head", False),
    ("data missing", lambda p: ["--data", p["root"] / "none.txt"], "no built-in dataset and no file", True),
    ("data is a folder", lambda p: ["--data", p["dir"]], "is a folder, not a file", True),
    ("data is a FIFO", lambda p: ["--data", p["fifo"]], "FIFO", True),
    ("data is /dev/zero", lambda p: ["--data", "/dev/zero"], "is a device", True),
    ("data of another format", lambda p: _data(p, "d.parquet", "x"), "cannot read .parquet", True),
    ("data is binary", lambda p: _data(p, "d.txt", b"\x00\x01" * 10), "looks like a binary file", True),
    ("csv quote never closed", lambda p: _data(p, "d.csv", 'text\nok\n"open\nmore\n'), "never closed", True),
    ("csv row with extra cells", lambda p: _data(p, "d.csv", "text\nok\na,b\n"), "d.csv, row 3: 2 cells", True),
    ("csv duplicate header", lambda p: _data(p, "d.csv", "text,text\na,b\n"), "names the column 'text' twice", True),
    (
        "csv empty cell",
        lambda p: _data(p, "d.csv", "prompt,response\nq,a\nq2,\n"),
        "d.csv, row 3: 'response' is missing",
        True,
    ),
    ("csv over the row cap", lambda p: _data(p, "d.csv", "text\n" + "x\n" * 50_001), "more than 50,000 rows", True),
    (
        "jsonl nests deeply",
        lambda p: _data(p, "d.jsonl", '{"text": ' + "[" * 50_000 + "]" * 50_000 + "}\n"),
        "nested too deeply",
        True,
    ),
    (
        "jsonl number text",
        lambda p: _data(p, "d.jsonl", '{"text": 5}\n'),
        "'text' is a JSON number, not a string",
        True,
    ),
    ("jsonl huge number", lambda p: _data(p, "d.jsonl", '{"text": ' + "9" * 5000 + "}\n"), "thousands of digits", True),
    (
        "too little text",
        lambda p: _data(p, "d.txt", "a few words\n"),
        "lower the maximum sequence length (--max-seq-len)",
        False,
    ),
    ("out is a user's folder", lambda p: ["--out", p["user"]], "already exists and is not empty", True),
    ("out is a user's folder, overwrite", lambda p: ["--out", p["user"], "--overwrite"], "did not write", True),
    ("out is a file", lambda p: ["--out", p["file.txt"]], "is a file, not a folder", True),
    ("out under a file", lambda p: ["--out", p["under_file"]], "is a file, not a folder", True),
    ("overwrite without out", lambda p: ["--overwrite"], "--overwrite only applies with --out", True),
    ("compressed missing", lambda p: ["--compressed", p["root"] / "none"], "does not exist", True),
    (
        "compressed is a plain folder",
        lambda p: ["--compressed", p["user"]],
        "is not a lowrank_lab compressed checkpoint",
        True,
    ),
    ("compressed is no zip", lambda p: ["--compressed", p["not.zip"]], "holds no readable config.json", True),
]


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


def _with_defaults(args: list[str]) -> list[str]:
    out = list(args)
    for i in range(0, len(FAST), 2):
        if FAST[i] not in out and not (FAST[i] == "--steps" and "--epochs" in out):
            out += FAST[i : i + 2]
    if "--model" not in out and "--compressed" not in out:
        out += ["--model", "tiny-llama"]
    return out


@pytest.mark.parametrize(("argv", "fragment", "before_load"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_finetune_refuses(capsys, monkeypatch, paths, argv, fragment, before_load):
    args = _with_defaults([str(a) for a in argv(paths)])
    spy = LoadSpy(monkeypatch, finetune_cli)
    before = listing(paths["root"])
    code, line, result = run_cli(capsys, "finetune", *args)
    assert code == 2 and fragment in line, line
    assert result["ok"] is False
    assert listing(paths["root"]) == before
    if before_load:
        assert spy.calls == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_llama):
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 8}), "svd")
    return save_compressed(compressed, tmp_path_factory.mktemp("ck") / "ck", zip=True).with_suffix("")


def test_a_compressed_base_from_another_model_is_refused(capsys, monkeypatch, checkpoint):
    spy = LoadSpy(monkeypatch, finetune_cli)
    code, line, _ = run_cli(capsys, "finetune", "--model", "tiny-gpt2", "--compressed", checkpoint, *FAST)
    assert code == 2 and "was made from 'tiny-llama', not from --model 'tiny-gpt2'" in line
    assert spy.calls == 0


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_a_compressed_base_heals_from_its_folder_or_zip_with_its_own_model(capsys, tmp_path, checkpoint, as_zip):
    base = checkpoint.with_suffix(".zip") if as_zip else checkpoint
    code, _, result = run_cli(capsys, "finetune", "--compressed", base, *FAST, "--out", tmp_path / "healed")
    assert code == 0 and result["base"] == "compressed" and result["model"] == "tiny-llama"
    assert (tmp_path / "healed" / "adapter_config.json").exists()
