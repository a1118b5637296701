"""``spectra`` given bad input: exit 2, one line naming the value and the fix, strict JSON, no file touched.

Each row: the arguments (built from a user's folder of hostile paths), the message fragment,
and whether the check must come before any model is loaded.
"""

from __future__ import annotations

import json

import pytest

import lowrank_lab.cli.spectra as spectra_cli
from tests.unit.bad_input_support import LoadSpy, hostile, listing, run_cli

CASES = [
    # (id, argv, message fragment, refused before loading)
    ("empty model", lambda p: ["--model", ""], "no model given", True),
    ("blank model", lambda p: ["--model", "   "], "no model given", True),
    ("model is /dev/zero", lambda p: ["--model", "/dev/zero"], "not a regular file or folder", False),
    ("model is a FIFO", lambda p: ["--model", p["fifo"]], "FIFO", False),
    ("model folder without config", lambda p: ["--model", p["dir"]], "has no config.json", False),
    ("model is a text file", lambda p: ["--model", p["file.txt"]], "is not a model", False),
    ("model is no zip", lambda p: ["--model", p["not.zip"]], "is not a valid zip file", False),
    ("model is a zip bomb", lambda p: ["--model", p["bomb.zip"]], "zip bomb", False),
    ("model zip escapes", lambda p: ["--model", p["escape.zip"]], "unsafe file names", False),
    ("model is nothing", lambda p: ["--model", "no/such/place"], "no model named", False),
    ("out is an existing file", lambda p: ["--out", p["file.txt"].with_suffix(".json")], None, True),
    ("out is a folder", lambda p: ["--out", p["dir"]], ".json or .csv", True),
    ("out is a text file", lambda p: ["--out", p["root"] / "s.txt"], ".json or .csv", True),
    ("out under a file", lambda p: ["--out", p["file.txt"] / "s.json"], "is a file, not a folder", True),
    ("out ends with a slash", lambda p: ["--out", f"{p['root'] / 's.json'}/"], "ends with a slash", True),
    ("out is empty", lambda p: ["--out", ""], "empty", True),
    ("overwrite without out", lambda p: ["--overwrite"], "--overwrite only applies with --out", True),
    ("device cuda without CUDA", lambda p: ["--device", "cuda"], "no CUDA GPU", True),
    ("device cuda:7", lambda p: ["--device", "cuda:7"], "cuda:7", True),
    ("unknown device", lambda p: ["--device", "tpu"], "use 'cpu' or 'cuda'", True),
    ("stream a built-in name", lambda p: ["--stream"], "--stream reads a local model folder", True),
    (
        "stream with device",
        lambda p: ["--stream", "--device", "cpu", "--model", p["dir"]],
        "cannot be used together",
        True,
    ),
]


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


@pytest.mark.parametrize(("argv", "fragment", "before_load"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_spectra_refuses(capsys, monkeypatch, paths, argv, fragment, before_load):
    args = argv(paths)
    if fragment is None:  # an existing file named like an output: refused without --overwrite
        args[1].write_text("my own table\n")
        fragment = "already exists"
    if "--model" not in args:
        args = [*args, "--model", "tiny-llama"]
    spy = LoadSpy(monkeypatch, spectra_cli)
    before = listing(paths["root"])
    code, line, result = run_cli(capsys, "spectra", *args)
    assert code == 2 and line.startswith("error: ") and fragment in line
    assert result["ok"] is False and fragment in result["error"]
    assert listing(paths["root"]) == before  # nothing of the user's touched, nothing half-written
    if before_load:
        assert spy.calls == 0


def test_spectra_out_through_a_link_never_writes_the_target(capsys, paths):
    target = paths["root"] / "precious.json"
    target.write_text("precious\n")
    (paths["root"] / "s.json").symlink_to(target)
    before = listing(paths["root"])
    for extra in ([], ["--overwrite"]):
        code, line, _ = run_cli(capsys, "spectra", "--model", "tiny-llama", "--out", paths["root"] / "s.json", *extra)
        assert code == 2 and "symbolic link" in line
    assert listing(paths["root"]) == before and target.read_text() == "precious\n"


def test_spectra_overwrite_replaces_only_that_file(capsys, paths):
    out = paths["root"] / "s.json"
    out.write_text("old table\n")
    before = listing(paths["root"])
    code, _, result = run_cli(capsys, "spectra", "--model", "tiny-llama", "--out", out, "--overwrite")
    assert code == 0 and result["ok"] and json.loads(out.read_text())["matrices"]
    after = listing(paths["root"])
    assert {k for k in before if before[k] != after.get(k)} == {"s.json"} and set(after) == set(before)


def test_spectra_json_of_a_model_with_nan_weights_is_an_error_not_nan(capsys, tmp_path):
    import torch

    from lowrank_lab import load_model

    model = load_model("tiny-llama").copy()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan-model")
    from lowrank_lab.models.tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(tmp_path / "nan-model")
    code, line, result = run_cli(capsys, "spectra", "--model", tmp_path / "nan-model", "--no-cache")
    assert code == 2 and "model.layers.0.mlp.up_proj holds 1 NaN or infinite value" in line
    assert result["ok"] is False
