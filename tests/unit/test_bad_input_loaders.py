"""The loaders given bad input: load_model, load_compressed and extract_zip refuse by name, never half-load.

Nothing a loader refuses is written or changed (each row lists the folder before and after),
no pickle is read, and no remote code runs.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from lowrank_lab import (
    ArgumentTypeError,
    CheckpointError,
    LowrankLabError,
    ModelLoadError,
    ModelSpec,
    compress,
    load_compressed,
    load_model,
    save_compressed,
)
from lowrank_lab.checkpoint import extract_zip
from lowrank_lab.checkpoint import unzip as unzip_module
from lowrank_lab.plan import RankPlan
from tests.unit.bad_input_support import hostile, listing


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


def _pickle_folder(p):
    folder = p["root"] / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04\x95")  # a pickle: never opened
    return folder


def _bad_config(p):
    folder = p["root"] / "bad-config"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


def _no_weights(p):
    folder = p["root"] / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def _plain_zip(p):
    path = p["root"] / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/config.json", json.dumps({"model_type": "llama"}))
    return path


LOAD_MODEL = [
    ("None", lambda p: None, ArgumentTypeError, "load_model takes a ModelSpec"),
    ("a number", lambda p: 3, ArgumentTypeError, "got int 3"),
    ("bytes", lambda p: b"tiny-llama", ArgumentTypeError, "got bytes"),
    ("empty", lambda p: "", ModelLoadError, "no model given"),
    ("blank", lambda p: "  ", ModelLoadError, "no model given"),
    ("/dev/zero", lambda p: "/dev/zero", ModelLoadError, "not a regular file or folder"),
    ("a FIFO", lambda p: p["fifo"], ModelLoadError, "FIFO"),
    ("a folder without config", lambda p: p["dir"], ModelLoadError, "has no config.json"),
    ("a config that is not JSON", _bad_config, ModelLoadError, "is not valid JSON"),
    ("a config and no weights", _no_weights, ModelLoadError, "has a config.json but no weights"),
    ("weights only as pickle", _pickle_folder, ModelLoadError, "pytorch_model.bin, a pickle file"),
    ("a pickle file", lambda p: _pickle_folder(p) / "pytorch_model.bin", ModelLoadError, "is a pickle file"),
    ("a text file", lambda p: p["file.txt"], ModelLoadError, "is not a model"),
    ("not a zip", lambda p: p["not.zip"], CheckpointError, "is not a valid zip file"),
    ("a zip bomb", lambda p: p["bomb.zip"], CheckpointError, "zip bomb"),
    ("a zip that escapes", lambda p: p["escape.zip"], CheckpointError, "unsafe file names"),
    ("a zip of a plain model", _plain_zip, ModelLoadError, "not a lowrank_lab compressed checkpoint"),
    ("nothing at all", lambda p: p["root"] / "nowhere", ModelLoadError, "no model named"),
    ("a hub id, offline", lambda p: "someone/some-model", ModelLoadError, "cannot reach the Hugging Face Hub"),
]


@pytest.mark.parametrize(("source", "error", "fragment"), [c[1:] for c in LOAD_MODEL], ids=[c[0] for c in LOAD_MODEL])
def test_load_model_refuses(paths, source, error, fragment):
    src = source(paths)
    before = listing(paths["root"])
    with pytest.raises(error, match=fragment):
        load_model(str(src) if hasattr(src, "parts") else src)
    assert listing(paths["root"]) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"dtype": "fp8"}, ModelLoadError, "dtype 'fp8' is not supported"),
        ({"dtype": 3}, ModelLoadError, "dtype 3"),
        ({"seed": -1}, ArgumentTypeError, "seed must be an integer ≥ 0"),
        ({"seed": "1"}, ArgumentTypeError, "seed"),
        ({"revision": 5}, ArgumentTypeError, "revision must be a str"),
        ({"trust_remote_code": "yes"}, ArgumentTypeError, "trust_remote_code must be True or False"),
    ],
)
def test_model_spec_checks_its_fields(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        ModelSpec("tiny-llama", **kwargs)


def test_a_wrong_type_is_a_type_error_and_one_of_ours():
    with pytest.raises(TypeError):
        load_model(None)
    with pytest.raises(LowrankLabError):
        load_model(["tiny-llama"])


def test_a_tokenizer_that_needs_remote_code_is_not_run_and_the_note_says_why(tmp_path, tiny_llama):
    folder = tmp_path / "custom-tokenizer"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(auto_map={"AutoTokenizer": ["mytok.MyTokenizer", None]}, tokenizer_class="MyTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "mytok.py").write_text("open('REMOTE_CODE_RAN', 'w').write('ran')\n")
    loaded = load_model(str(folder))
    assert loaded.tokenizer is None and not (tmp_path / "REMOTE_CODE_RAN").exists()
    assert any("needs its own Python code" in note and "trust_remote_code=True" in note for note in loaded.notes)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_llama):
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 8}), "svd")
    return save_compressed(compressed, tmp_path_factory.mktemp("ck") / "ck", zip=True).with_suffix("")


LOAD_COMPRESSED = [
    ("None", lambda p, ck: None, ArgumentTypeError, "load_compressed takes a path"),
    ("missing", lambda p, ck: p["root"] / "none", CheckpointError, "it does not exist"),
    ("an unknown dtype", lambda p, ck: ck, CheckpointError, "cannot load in dtype 'fp8'"),
    ("a text file", lambda p, ck: p["file.txt"], CheckpointError, "config.json is missing"),
    ("a zip bomb", lambda p, ck: p["bomb.zip"], CheckpointError, "zip bomb"),
    ("a zip that escapes", lambda p, ck: p["escape.zip"], CheckpointError, "unsafe file names"),
    ("a plain folder", lambda p, ck: p["user"], CheckpointError, "no 'lowrank' section"),
]


@pytest.mark.parametrize(
    ("path", "error", "fragment"), [c[1:] for c in LOAD_COMPRESSED], ids=[c[0] for c in LOAD_COMPRESSED]
)
def test_load_compressed_refuses(paths, checkpoint, path, error, fragment):
    target = path(paths, checkpoint)
    before = listing(paths["root"])
    with pytest.raises(error, match=fragment):
        load_compressed(target, dtype="fp8" if "dtype" in fragment else None)
    assert listing(paths["root"]) == before


def test_load_model_and_load_compressed_read_the_same_zip(checkpoint):
    from_zip = load_model(str(checkpoint.with_suffix(".zip")))
    assert from_zip.tokenizer is not None and "compressed" in from_zip.title
    assert load_compressed(checkpoint.with_suffix(".zip")).plan == RankPlan({"model.layers.0.mlp.up_proj": 8})


def test_extract_zip_caps_the_members_and_the_size(tmp_path, monkeypatch):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(unzip_module.MAX_MEMBERS + 1):
            zf.writestr(f"m/{i}.txt", "")
    with pytest.raises(CheckpointError, match="more than 10,000"):
        extract_zip(many, tmp_path / "out1")
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/model.safetensors", b"x" * 4096, compress_type=zipfile.ZIP_STORED)
    monkeypatch.setattr(unzip_module, "MAX_EXTRACT_BYTES", 1024)  # the cap, shrunk to this test's size
    with pytest.raises(CheckpointError, match="would expand to"):
        extract_zip(big, tmp_path / "out2")
    assert not (tmp_path / "out1" / "m").exists() and not (tmp_path / "out2" / "m").exists()  # nothing extracted
