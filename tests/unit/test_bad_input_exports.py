"""The exports given a taken or unsafe place to write: refused by name, before any work, nothing touched.

Every writer (save_compressed, save_dense, save_adapter, save_merged, export, save_rank_pattern,
the zips) goes through :mod:`lowrank_lab.outputs`; each row lists the user's folder before and
after the call.
"""

from __future__ import annotations

import json
import re

import pytest

from lowrank_lab import ArgumentTypeError, CheckpointError, OutputError, compress, load_model
from lowrank_lab.data import builtin_source, prepare
from lowrank_lab.export import export, save_adapter, save_compressed, save_dense, save_merged, save_rank_pattern
from lowrank_lab.finetune import LoraSettings, finetune
from lowrank_lab.outputs import MANIFEST, read_manifest
from lowrank_lab.plan import RankPlan
from tests.unit.bad_input_support import hostile, listing, user_files

PLAN = RankPlan({"model.layers.0.mlp.up_proj": 8})


@pytest.fixture(scope="module")
def model_area(tmp_path_factory, tiny_llama):
    """A user's folder holding their own Hugging Face model, and a compressed model made from it."""
    root = tmp_path_factory.mktemp("area")
    source = root / "my-model"
    tiny_llama.model.save_pretrained(source)
    tiny_llama.tokenizer.save_pretrained(source)
    (source / "notes.txt").write_text("my notes\n")
    loaded = load_model(str(source))
    compressed = compress(loaded, PLAN, "svd")
    data = prepare(builtin_source("number-words"), loaded.tokenizer, 128)
    adapter = finetune(compressed, data, LoraSettings(r=2, steps=1, eval_every=0, batch_size=2))
    return root, source, compressed, adapter


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


WRITERS = {
    "save_compressed": lambda c, a, out, **kw: save_compressed(c, out, **kw),
    "save_dense": lambda c, a, out, **kw: save_dense(c, out, **kw),
    "save_adapter": lambda c, a, out, **kw: save_adapter(a, out, **kw),
    "save_merged": lambda c, a, out, **kw: save_merged(a, out, **kw),
    "export compressed": lambda c, a, out, **kw: export("compressed", out, compressed=c, **kw),
    "export rank_pattern": lambda c, a, out, **kw: export("rank_pattern", out, compressed=c, **kw),
}

PLACES = [
    # (id, out path, keyword arguments, error, fragment)
    ("a user's folder", lambda p: p["user"], {}, OutputError, "already exists and is not empty"),
    ("a user's folder, overwrite", lambda p: p["user"], {"overwrite": True}, OutputError, "did not write"),
    ("a file", lambda p: p["file.txt"], {"overwrite": True}, OutputError, "is a file, not a folder"),
    ("a link to a folder", lambda p: p["link"], {"overwrite": True}, OutputError, "symbolic link"),
    ("a broken link", lambda p: p["dangling"], {}, OutputError, "symbolic link"),
    ("under a file", lambda p: p["under_file"], {}, OutputError, "is a file, not a folder"),
    ("the source model", lambda p: p["source"], {"overwrite": True}, OutputError, "is the source model"),
    ("inside the source model", lambda p: p["source"] / "export", {}, OutputError, "lies inside the source model"),
    (
        "a folder holding the source",
        lambda p: p["source"].parent,
        {"overwrite": True},
        OutputError,
        "contains the source model",
    ),
    ("an unknown dtype", lambda p: p["root"] / "new", {"dtype": "fp8"}, CheckpointError, "dtype 'fp8'"),
]


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize(("out", "kwargs", "error", "fragment"), [c[1:] for c in PLACES], ids=[c[0] for c in PLACES])
def test_every_writer_refuses_a_place_it_does_not_own(paths, model_area, writer, out, kwargs, error, fragment):
    area, source, compressed, adapter = model_area
    paths["source"] = source
    if "rank_pattern" in writer and "dtype" in kwargs:
        kwargs = {}  # weightless: no dtype to refuse
        out, error, fragment = (lambda p: p["user"]), OutputError, "already exists"
    watched = [paths["root"], area]
    before = [listing(w) for w in watched]
    with pytest.raises(error, match=re.escape(fragment)):
        WRITERS[writer](compressed, adapter, out(paths), **kwargs)
    assert [listing(w) for w in watched] == before


ZIP_WRITERS = ["save_compressed", "save_dense", "save_adapter", "save_merged"]


@pytest.mark.parametrize("writer", ZIP_WRITERS)
def test_a_zip_never_replaces_a_users_file_and_is_checked_before_the_folder_is_written(tmp_path, model_area, writer):
    _, _, compressed, adapter = model_area
    (tmp_path / "out.zip").write_text("the user's own zip\n")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="out.zip already exists"):
        WRITERS[writer](compressed, adapter, tmp_path / "out", zip=True)
    assert listing(tmp_path) == before  # not even the folder was written
    (tmp_path / "out.zip").unlink()
    (tmp_path / "out.zip").mkdir()
    (tmp_path / "out.zip" / "keep.txt").write_text("mine")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="out.zip is a folder"):
        WRITERS[writer](compressed, adapter, tmp_path / "out", zip=True, overwrite=True)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("writer", ZIP_WRITERS)
def test_an_export_is_replaced_only_while_it_holds_what_lowrank_lab_wrote(tmp_path, model_area, writer):
    _, _, compressed, adapter = model_area
    folder = WRITERS[writer](compressed, adapter, tmp_path / "out")
    manifest = read_manifest(folder)
    assert manifest.writer == writer and {"config.json", "adapter_config.json"} & set(manifest.files)
    (folder / "my-notes.txt").write_text("mine\n")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="my-notes.txt was not written by lowrank_lab"):
        WRITERS[writer](compressed, adapter, folder, overwrite=True)
    assert listing(tmp_path) == before
    (folder / "my-notes.txt").unlink()
    WRITERS[writer](compressed, adapter, folder, overwrite=True, zip=True)
    assert (folder / MANIFEST).exists() and (tmp_path / "out.zip").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.zip"]


def test_save_dense_overwrite_spares_a_folder_with_an_adapter_config(tmp_path, model_area):
    """Issue #10, case 3: an adapter_config.json alone used to mark a folder as ours."""
    _, _, compressed, _ = model_area
    folder = user_files(tmp_path / "app")  # holds config.json and adapter_config.json of another program
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="did not write"):
        save_dense(compressed, folder, overwrite=True)
    assert listing(tmp_path) == before


RANK_PATTERN = [
    ("an existing file", lambda p: p["file.txt"], False, "already exists"),
    ("a link to a user's file", lambda p: p["link"], True, "symbolic link"),
    ("a broken link", lambda p: p["dangling"], True, "symbolic link"),
    ("a folder", lambda p: p["dir"], True, "is a folder"),
    ("a FIFO", lambda p: p["fifo"], True, "FIFO"),
    ("under a file", lambda p: p["under_file"], False, "is a file, not a folder"),
]


@pytest.mark.parametrize(
    ("path", "overwrite", "fragment"), [c[1:] for c in RANK_PATTERN], ids=[c[0] for c in RANK_PATTERN]
)
def test_save_rank_pattern_refuses(paths, path, overwrite, fragment):
    before = listing(paths["root"])
    with pytest.raises(OutputError, match=re.escape(fragment)):
        save_rank_pattern(PLAN, path(paths), overwrite=overwrite)
    assert listing(paths["root"]) == before


def test_save_rank_pattern_replaces_a_file_only_with_overwrite(paths):
    target = paths["root"] / "rank_pattern.json"
    target.write_text("mine\n")
    with pytest.raises(OutputError, match="already exists"):
        save_rank_pattern(PLAN, target)
    assert target.read_text() == "mine\n"
    save_rank_pattern(PLAN, target, overwrite=True)
    assert json.loads(target.read_text())["rank_pattern"] == PLAN.as_dict()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c, a, t: save_compressed(None, t), "expected a CompressedModel"),
        (lambda c, a, t: save_compressed(c, None), "the output folder must be a str or pathlib.Path"),
        (lambda c, a, t: save_compressed(c, t, zip="yes"), "zip must be True or False"),
        (lambda c, a, t: save_compressed(c, t, overwrite=1), "overwrite must be True or False"),
        (lambda c, a, t: save_adapter(c, t), "expected a TrainedAdapter"),
        (lambda c, a, t: save_rank_pattern({"a": 1}, t / "p.json"), "expected a RankPlan"),
        (lambda c, a, t: export("compressed", t, compressed="model"), "expected a CompressedModel"),
    ],
)
def test_wrong_types_are_type_errors_with_a_message(tmp_path, model_area, call, fragment):
    _, _, compressed, adapter = model_area
    with pytest.raises(ArgumentTypeError, match=re.escape(fragment)):
        call(compressed, adapter, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
