"""``compress`` given bad input: exit 2, one line naming the value and the fix, strict JSON, no file touched.

Arguments are checked before the model is loaded (numbers, exclusive options, files, outputs,
sequence lengths against the config on disk); what only the model can tell (plan names,
text lengths in its tokens) before any calibration or factorization. Every row lists the
user's folder before and after.
"""

from __future__ import annotations

import json
import shutil

import pytest

import lowrank_lab.cli.compress as compress_cli
from lowrank_lab.outputs import MANIFEST
from tests.unit.bad_input_support import LoadSpy, hostile, listing, run_cli

FAST = ["--samples", "2", "--seq-len", "16", "--eval-seq-len", "16", "--eval-blocks", "1", "--max-new-tokens", "2"]


def _plan(p, name, content):
    path = p["root"] / name
    path.write_text(content)
    return ["--plan", path, "--no-eval"]


def _text(p, option, key):
    return [option, p[key]]


CASES = [
    # (id, argv, fragment, refused before loading)
    ("keep nan", lambda p: ["--keep", "nan"], "--keep nan: not a finite number", True),
    ("keep inf", lambda p: ["--keep", "inf"], "not a finite number", True),
    ("keep 0", lambda p: ["--keep", "0"], "--keep 0 is outside (0, 1]", True),
    ("keep 1.5", lambda p: ["--keep", "1.5"], "--keep 1.5 is outside (0, 1]", True),
    ("samples 0", lambda p: ["--samples", "0"], "--samples 0 is too small", True),
    ("seq-len 1", lambda p: ["--seq-len", "1"], "--seq-len 1 is too small", True),
    (
        "seq-len past the positions",
        lambda p: ["--seq-len", "257"],
        "longer than tiny-llama can read (256 positions)",
        True,
    ),
    ("eval-seq-len past the positions", lambda p: ["--eval-seq-len", "300"], "--eval-seq-len 300 is longer", True),
    ("eval-blocks 0", lambda p: ["--eval-blocks", "0"], "--eval-blocks 0 is too small", True),
    ("max-new-tokens 0", lambda p: ["--max-new-tokens", "0"], "--max-new-tokens 0 is too small", True),
    (
        "plan with keep",
        lambda p: [*_plan(p, "p.json", '{"model.layers.0.mlp.up_proj": 8}'), "--keep", "0.5"],
        "--plan and --keep cannot be used together",
        True,
    ),
    (
        "plan with allocate",
        lambda p: [*_plan(p, "p.json", '{"model.layers.0.mlp.up_proj": 8}'), "--allocate", "auto"],
        "--plan and --allocate",
        True,
    ),
    (
        "no-eval with eval-text",
        lambda p: ["--no-eval", "--eval-text", p["short.txt"]],
        "--no-eval and --eval-text",
        True,
    ),
    (
        "svd with calibration text",
        lambda p: ["--method", "svd", "--allocate", "uniform", "--calibration-text", p["short.txt"]],
        "--calibration-text is not used",
        True,
    ),
    ("distill -1", lambda p: ["--distill", "-1"], "--distill -1 is too small", True),
    ("distill-lr 0", lambda p: ["--distill", "2", "--distill-lr", "0"], "--distill-lr 0 is outside (0, 1)", True),
    ("distill-lr 1", lambda p: ["--distill", "2", "--distill-lr", "1"], "--distill-lr 1 is outside (0, 1)", True),
    ("distill-lr nan", lambda p: ["--distill", "2", "--distill-lr", "nan"], "--distill-lr nan: not a finite", True),
    (
        "distill-lr without distill",
        lambda p: ["--distill-lr", "1e-3"],
        "--distill-lr only applies with --distill",
        True,
    ),
    ("distill-batch without distill", lambda p: ["--distill-batch", "2"], "--distill-batch only applies with", True),
    ("distill-batch 0", lambda p: ["--distill", "2", "--distill-batch", "0"], "--distill-batch 0 is too small", True),
    (
        "distill-batch past the calibration text",
        lambda p: ["--seq-len", "200", "--distill", "2", "--distill-batch", "4000"],
        "lower the distillation batch size (--distill-batch) to at most",
        False,
    ),
    (
        "distill with stream",
        lambda p: ["--stream", "--out", p["root"] / "ck", "--distill", "2"],
        "--distill trains the compressed model in memory",
        True,
    ),
    ("dtype without out", lambda p: ["--dtype", "fp16"], "--dtype only applies with --out", True),
    ("zip without out", lambda p: ["--zip"], "--zip only applies with --out", True),
    ("overwrite without out", lambda p: ["--overwrite"], "--overwrite only applies with --out", True),
    ("unknown dtype", lambda p: ["--dtype", "fp8", "--out", p["root"] / "ck"], "--dtype 'fp8'", True),
    ("plan missing", lambda p: ["--plan", p["root"] / "missing.json"], "does not exist", True),
    ("plan is a folder", lambda p: ["--plan", p["dir"]], "is a folder, not a file", True),
    ("plan is a FIFO", lambda p: ["--plan", p["fifo"]], "FIFO", True),
    ("plan is not JSON", lambda p: _plan(p, "p.json", "{oops"), "is not valid JSON", True),
    ("plan nests deeply", lambda p: _plan(p, "p.json", "[" * 50_000 + "]" * 50_000), "nests too deeply", True),
    (
        "plan rank of 5000 digits",
        lambda p: _plan(p, "p.json", '{"a": ' + "9" * 5000 + "}"),
        "thousands of digits",
        True,
    ),
    ("plan is a list", lambda p: _plan(p, "p.json", "[1, 2]"), "a rank plan is a JSON object", True),
    (
        "plan rank is a string",
        lambda p: _plan(p, "p.json", '{"model.layers.0.mlp.up_proj": "8"}'),
        "must be a positive integer, got '8'",
        True,
    ),
    (
        "plan rank 0",
        lambda p: _plan(p, "p.json", '{"model.layers.0.mlp.up_proj": 0}'),
        "must be a positive integer, got 0",
        True,
    ),
    ("plan rank 8.5", lambda p: _plan(p, "p.json", '{"model.layers.0.mlp.up_proj": 8.5}'), "got 8.5", True),
    ("plan is empty", lambda p: _plan(p, "p.json", "{}"), "names no module", True),
    (
        "plan of another format",
        lambda p: _plan(p, "p.json", '{"format": "x", "ranks": {}}'),
        "not a lowrank_lab rank plan",
        True,
    ),
    (
        "plan names lm_head",
        lambda p: _plan(p, "p.json", '{"lm_head": 8}'),
        "lm_head, which shares its weight with model.embed_tokens (tied)",
        False,
    ),
    ("plan names model.norm", lambda p: _plan(p, "p.json", '{"model.norm": 8}'), "model.norm is a LlamaRMSNorm", False),
    ("plan names the embedding", lambda p: _plan(p, "p.json", '{"model.embed_tokens": 8}'), "is an embedding", False),
    (
        "plan rank past full rank",
        lambda p: _plan(p, "p.json", '{"model.layers.0.mlp.up_proj": 100000}'),
        "above its full rank 64",
        False,
    ),
    (
        "plan names a missing module",
        lambda p: _plan(p, "p.json", '{"model.layers.9.mlp.up_proj": 4}'),
        "does not have: model.layers.9.mlp.up_proj",
        False,
    ),
    ("calibration text is a folder", lambda p: _text(p, "--calibration-text", "dir"), "--calibration-text", True),
    (
        "calibration text is a FIFO",
        lambda p: _text(p, "--calibration-text", "fifo"),
        "FIFO (named pipe), not a regular file",
        True,
    ),
    (
        "calibration text is /dev/zero",
        lambda p: ["--calibration-text", "/dev/zero"],
        "is a device, not a regular file",
        True,
    ),
    (
        "calibration text is binary",
        lambda p: _text(p, "--calibration-text", "binary.txt"),
        "looks like a binary file",
        True,
    ),
    ("calibration text is empty", lambda p: _text(p, "--calibration-text", "empty.txt"), "holds no text", True),
    ("calibration text is latin-1", lambda p: _text(p, "--calibration-text", "latin1.txt"), "is not UTF-8 text", True),
    (
        "calibration text is a broken link",
        lambda p: _text(p, "--calibration-text", "dangling"),
        "broken symbolic link",
        True,
    ),
    ("calibration text too short", lambda p: _text(p, "--calibration-text", "short.txt"), "short.txt has", False),
    ("evaluation text too short", lambda p: _text(p, "--eval-text", "short.txt"), "--eval-seq-len 16", False),
    ("out is a file", lambda p: ["--out", p["file.txt"]], "is a file, not a folder", True),
    ("out is a user's folder", lambda p: ["--out", p["user"]], "already exists and is not empty", True),
    ("out is a user's folder, overwrite", lambda p: ["--out", p["user"], "--overwrite"], "did not write", True),
    ("out is a broken link", lambda p: ["--out", p["dangling"]], "symbolic link", True),
    ("out is a link to a folder", lambda p: ["--out", p["link"]], "symbolic link", True),
    ("out under a file", lambda p: ["--out", p["under_file"]], "is a file, not a folder", True),
    ("zip is a folder", lambda p: ["--out", p["dir"].with_name("d2"), "--zip"], None, True),
]


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


@pytest.mark.parametrize(("argv", "fragment", "before_load"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compress_refuses(capsys, monkeypatch, paths, argv, fragment, before_load):
    args = [str(a) for a in argv(paths)]
    if fragment is None:  # the zip's name is taken by a folder of the user's
        (paths["root"] / "d2.zip").mkdir()
        (paths["root"] / "d2.zip" / "keep.txt").write_text("mine")
        fragment = "is a folder"
    spy = LoadSpy(monkeypatch, compress_cli)
    before = listing(paths["root"])
    code, line, result = run_cli(capsys, "compress", "--model", "tiny-llama", *FAST, *args)
    assert code == 2 and fragment in line, line
    assert result["ok"] is False and fragment in result["error"]
    assert listing(paths["root"]) == before
    assert spy.calls == (0 if before_load else 1)


@pytest.fixture
def model_folder(tmp_path, tiny_llama):
    """A user's own Hugging Face folder (with a file of theirs) to compress from."""
    folder = tmp_path / "user-area" / "my-model"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    (folder / "notes.txt").write_text("my notes on this model\n")
    return folder


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        (lambda m: m, "is the source model"),
        (lambda m: m / "compressed", "lies inside the source model"),
        (lambda m: m.parent, "contains the source model"),
    ],
    ids=["the model folder itself", "inside it", "its parent"],
)
def test_an_output_never_touches_the_source_model(capsys, monkeypatch, model_folder, out, fragment):
    spy = LoadSpy(monkeypatch, compress_cli)
    root = model_folder.parent
    before = listing(root)
    code, line, _ = run_cli(
        capsys, "compress", "--model", model_folder, *FAST, "--no-eval", "--allocate", "uniform",
        "--out", out(model_folder), "--overwrite",
    )  # fmt: skip
    assert code == 2 and fragment in line
    assert listing(root) == before and spy.calls == 0


def test_an_existing_zip_needs_overwrite_and_a_users_file_stops_it(capsys, tmp_path):
    root = tmp_path / "user-area"
    root.mkdir()
    (root / "ck.zip").write_text("the user's own zip\n")
    args = ["compress", "--model", "tiny-llama", *FAST, "--no-eval", "--allocate", "uniform", "--out", root / "ck"]
    before = listing(root)
    code, line, _ = run_cli(capsys, *args, "--zip")
    assert code == 2 and "ck.zip already exists" in line and listing(root) == before
    (root / "ck.zip").unlink()
    assert run_cli(capsys, *args, "--zip")[0] == 0
    assert (root / "ck" / MANIFEST).exists() and (root / "ck.zip").exists()
    (root / "ck" / "my-notes.txt").write_text("mine\n")  # the user adds a file to our export
    before = listing(root)
    code, line, _ = run_cli(capsys, *args, "--zip", "--overwrite")
    assert code == 2 and "my-notes.txt was not written by lowrank_lab" in line and listing(root) == before
    (root / "ck" / "my-notes.txt").unlink()
    code, _, result = run_cli(capsys, *args, "--zip", "--overwrite", "--dtype", "fp16")
    assert code == 0 and result["out"].endswith("ck.zip")
    assert json.loads((root / "ck" / "config.json").read_text())["lowrank"]["dtype"] == "float16"
    assert sorted(p.name for p in root.iterdir()) == ["ck", "ck.zip"]  # nothing half-written beside them


def test_a_checkpoint_compressed_from_a_copy_loads_back(capsys, tmp_path, model_folder):
    """The protected source is the model's folder only: an output beside it is fine."""
    shutil.copytree(model_folder, tmp_path / "elsewhere")
    code, _, result = run_cli(
        capsys, "compress", "--model", tmp_path / "elsewhere", *FAST, "--no-eval", "--allocate", "uniform",
        "--out", model_folder.parent / "ck",
    )  # fmt: skip
    assert code == 0 and result["ok"]


def test_a_model_with_nan_weights_is_refused_before_any_method_runs(capsys, tmp_path, tiny_llama):
    import torch

    broken = tiny_llama.copy()
    with torch.no_grad():
        broken.model.layers[1].self_attn.v_proj.weight[2, 2] = float("nan")
    broken.save_pretrained(tmp_path / "nan-model")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "nan-model")
    for method in ("svd", "whitened", "pca"):
        code, line, _ = run_cli(
            capsys, "compress", "--model", tmp_path / "nan-model", *FAST, "--method", method,
            "--allocate", "uniform", "--no-eval",
        )  # fmt: skip
        assert code == 2 and "model.layers.1.self_attn.v_proj holds 1 NaN or infinite value" in line, (method, line)


def test_a_path_longer_than_the_file_system_allows_is_named_shortly(capsys, tmp_path):
    code, line, _ = run_cli(capsys, "compress", "--model", "x" * 5000, *FAST)
    assert code == 2 and "cannot be a path here" in line and len(line) < 300
    code, line, _ = run_cli(capsys, "compress", "--model", "tiny-llama", *FAST, "--out", tmp_path / ("a" * 300) / "b")
    assert code == 2 and "too long for the file system" in line and len(line) < 300
