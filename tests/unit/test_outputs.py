"""The ownership rule for outputs, case by case: what is written, what is refused, what is never touched.

Every refusal is checked three ways: the error type, a fragment of its message, and a listing
of the user's files before and after (equal: nothing created, removed or changed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lowrank_lab.errors import ArgumentTypeError, LowrankLabError, OutputError
from lowrank_lab.outputs import (
    MANIFEST,
    check_output_file,
    check_output_folder,
    read_manifest,
    source_paths,
    staged_file,
    staged_folder,
    write_file,
)
from tests.unit.bad_input_support import is_root, listing, user_files

# -- single files: (name, arrange(tmp) -> target, overwrite, error fragment or None) --------------


def _plain(tmp):
    return tmp / "out.json"


def _nested_new(tmp):
    return tmp / "a" / "b" / "out.json"


def _existing(tmp):
    (tmp / "out.json").write_text("mine")
    return tmp / "out.json"


def _link_to_user_file(tmp):
    (tmp / "precious.txt").write_text("precious")
    (tmp / "out.json").symlink_to(tmp / "precious.txt")
    return tmp / "out.json"


def _dangling_link(tmp):
    (tmp / "out.json").symlink_to(tmp / "nowhere.json")
    return tmp / "out.json"


def _folder(tmp):
    user_files(tmp / "out.json")
    return tmp / "out.json"


def _fifo(tmp):
    os.mkfifo(tmp / "out.json")
    return tmp / "out.json"


def _under_file(tmp):
    (tmp / "file.txt").write_text("x")
    return tmp / "file.txt" / "out.json"


def _under_dangling_folder_link(tmp):
    (tmp / "gone").symlink_to(tmp / "no-such-folder")
    return tmp / "gone" / "out.json"


def _inside_source(tmp):
    user_files(tmp / "model")
    return tmp / "model" / "spectra.json"


def _is_source_zip(tmp):
    (tmp / "model").mkdir()
    (tmp / "model.zip").write_bytes(b"PK")
    return tmp / "model.zip"


def _link_into_source(tmp):
    user_files(tmp / "model")
    (tmp / "alias").symlink_to(tmp / "model")
    return tmp / "alias" / "out.json"


FILE_CASES = [
    ("new file", _plain, False, None),
    ("new file in new folders", _nested_new, False, None),
    ("existing file", _existing, False, "already exists"),
    ("existing file, overwrite", _existing, True, None),
    ("link to a user's file", _link_to_user_file, False, "symbolic link"),
    ("link to a user's file, overwrite", _link_to_user_file, True, "symbolic link"),
    ("dangling link", _dangling_link, True, "symbolic link"),
    ("a folder", _folder, True, "is a folder"),
    ("a FIFO", _fifo, True, "FIFO"),
    ("under a file", _under_file, False, "is a file, not a folder"),
    ("under a dangling link", _under_dangling_folder_link, False, "broken symbolic link"),
    ("inside the source model", _inside_source, True, "lies inside the source model"),
    ("the source zip", _is_source_zip, True, "is the source model"),
    ("through a link into the source", _link_into_source, True, "source model"),
]


@pytest.mark.parametrize(
    ("arrange", "overwrite", "fragment"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_single_file_outputs(tmp_path, arrange, overwrite, fragment):
    target = arrange(tmp_path)
    protect = (tmp_path / "model", tmp_path / "model.zip") if (tmp_path / "model").exists() else ()
    before = listing(tmp_path)
    if fragment is None:
        written = write_file(target, '{"ok": true}', overwrite=overwrite, protect=protect)
        assert written == target and target.read_text() == '{"ok": true}'
        after = listing(tmp_path)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed <= {target.relative_to(tmp_path).as_posix(), "a", "a/b"}  # only the output itself
        assert not [p for p in tmp_path.rglob(".*tmp-*")]  # no temporary sibling left
    else:
        with pytest.raises(OutputError, match=fragment):
            write_file(target, "x", overwrite=overwrite, protect=protect)
        assert listing(tmp_path) == before


def test_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "out.json").write_text("mine")
    before = listing(tmp_path)
    with pytest.raises(RuntimeError), staged_file(tmp_path / "out.json", overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert listing(tmp_path) == before


def test_a_file_that_appears_during_the_work_is_kept(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(OutputError, match="already exists"), staged_file(target) as tmp:
        tmp.write_text("ours")
        target.write_text("theirs")  # another program wrote it meanwhile
    assert target.read_text() == "theirs"


@pytest.mark.skipif(is_root(), reason="root may write anywhere")
def test_an_unwritable_folder_is_refused_before_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="no permission"):
            check_output_file(locked / "out.json")
        with pytest.raises(OutputError, match="no permission"):
            check_output_folder(locked / "ckpt")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (None, ArgumentTypeError, "str or pathlib.Path"),
        (3, ArgumentTypeError, "str or pathlib.Path"),
        (b"out.json", ArgumentTypeError, "str or pathlib.Path"),
        ("", OutputError, "empty"),
        ("   ", OutputError, "empty"),
        ("a\0b", OutputError, "NUL"),
        ("/", OutputError, "not a file or folder name"),
        ("x" * 300, OutputError, "too long"),
    ],
)
def test_bad_path_values(value, error, fragment):
    with pytest.raises(error, match=fragment):
        check_output_file(value)
    with pytest.raises(error, match=fragment):
        check_output_folder(value)


def test_a_wrong_type_is_both_a_type_error_and_ours():
    with pytest.raises(TypeError):
        check_output_folder(None)
    with pytest.raises(LowrankLabError):
        check_output_file(None)
    with pytest.raises(ArgumentTypeError, match="overwrite must be True or False"):
        check_output_file("out.json", overwrite="yes")


# -- folders --------------------------------------------------------------------------------------


def _write_export(folder: Path, overwrite=False, protect=(), text="weights", extra=()):
    with staged_folder(folder, overwrite, protect, writer="test") as tmp:
        (tmp / "config.json").write_text('{"lowrank": 1}')
        (tmp / "model.safetensors").write_text(text)
        (tmp / "base").mkdir()
        (tmp / "base" / "README.md").write_text("card")
        for name in extra:
            (tmp / name).write_text("x")
    return folder


def _new(tmp):
    return tmp / "ckpt"


def _empty(tmp):
    (tmp / "ckpt").mkdir()
    return tmp / "ckpt"


def _ours(tmp):
    return _write_export(tmp / "ckpt", text="old")


def _user_folder(tmp):
    return user_files(tmp / "ckpt")


def _user_folder_with_config(tmp):
    (tmp / "ckpt").mkdir()
    (tmp / "ckpt" / "config.json").write_text('{"app": true}')
    (tmp / "ckpt" / "adapter_config.json").write_text("{}")
    (tmp / "ckpt" / "keep").mkdir()
    (tmp / "ckpt" / "keep" / "photo.jpg").write_bytes(b"\xff\xd8")
    return tmp / "ckpt"


def _ours_plus_user_file(tmp):
    folder = _ours(tmp)
    (folder / "my-notes.txt").write_text("mine")
    return folder


def _ours_plus_user_folder(tmp):
    folder = _ours(tmp)
    (folder / "mine").mkdir()
    return folder


def _ours_edited(tmp):
    folder = _ours(tmp)
    (folder / "base" / "README.md").write_text("my own edits to the card")
    return folder


def _ours_plus_link(tmp):
    folder = _ours(tmp)
    (tmp / "precious.txt").write_text("precious")
    (folder / "link").symlink_to(tmp / "precious.txt")
    return folder


def _forged_manifest(tmp):
    folder = _user_folder(tmp)
    (tmp / "outside.txt").write_text("outside")
    files = {"../outside.txt": {"bytes": 7}, "notes.txt": {"bytes": 9}}
    (folder / MANIFEST).write_text(json.dumps({"format": "lowrank_lab.output", "files": files}))
    return folder


def _manifest_is_a_link(tmp):
    ours = _ours(tmp)
    user = user_files(tmp / "user")
    (user / MANIFEST).symlink_to(ours / MANIFEST)
    return user


def _damaged_manifest(tmp):
    folder = _ours(tmp)
    (folder / MANIFEST).write_text("{not json")
    return folder


def _a_file(tmp):
    (tmp / "ckpt").write_text("mine")
    return tmp / "ckpt"


def _link_to_user_folder(tmp):
    user_files(tmp / "user")
    (tmp / "ckpt").symlink_to(tmp / "user")
    return tmp / "ckpt"


def _link_to_our_folder(tmp):
    _write_export(tmp / "real")
    (tmp / "ckpt").symlink_to(tmp / "real")
    return tmp / "ckpt"


def _the_source(tmp):
    return user_files(tmp / "model")


def _inside_the_source(tmp):
    user_files(tmp / "model")
    return tmp / "model" / "ckpt"


def _contains_the_source(tmp):
    user_files(tmp / "outer" / "model")
    return tmp / "outer"


def _our_export_is_the_source(tmp):
    return _write_export(tmp / "model")


FOLDER_CASES = [
    ("new folder", _new, False, None),
    ("empty folder", _empty, False, None),
    ("our export, overwrite", _ours, True, None),
    ("our export, no overwrite", _ours, False, "already exists and is not empty"),
    ("a user's folder", _user_folder, False, "already exists and is not empty"),
    ("a user's folder, overwrite", _user_folder, True, "did not write"),
    ("a user's folder with a config.json, overwrite", _user_folder_with_config, True, "did not write"),
    ("our export plus a user's file, overwrite", _ours_plus_user_file, True, "my-notes.txt was not written"),
    ("our export plus a user's folder, overwrite", _ours_plus_user_folder, True, "mine is a folder"),
    ("our export edited by the user, overwrite", _ours_edited, True, "README.md was changed"),
    ("our export plus a link, overwrite", _ours_plus_link, True, "link"),
    ("a forged manifest naming ../, overwrite", _forged_manifest, True, "did not write"),
    ("a manifest that is a link, overwrite", _manifest_is_a_link, True, "did not write"),
    ("a damaged manifest, overwrite", _damaged_manifest, True, "did not write"),
    ("a file", _a_file, True, "is a file, not a folder"),
    ("a link to a user's folder", _link_to_user_folder, True, "symbolic link"),
    ("a link to our export", _link_to_our_folder, True, "symbolic link"),
    ("the source model", _the_source, True, "is the source model"),
    ("inside the source model", _inside_the_source, True, "lies inside the source model"),
    ("containing the source model", _contains_the_source, True, "contains the source model"),
    ("our own export as the source", _our_export_is_the_source, True, "is the source model"),
    ("under a file", lambda t: _under_file(t).with_name("ckpt"), False, "is a file, not a folder"),
]


@pytest.mark.parametrize(
    ("arrange", "overwrite", "fragment"), [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES]
)
def test_folder_outputs(tmp_path, arrange, overwrite, fragment):
    target = arrange(tmp_path)
    protect = (tmp_path / "model", tmp_path / "outer" / "model")
    before = listing(tmp_path)
    if fragment is None:
        _write_export(target, overwrite, protect, text="new")
        assert (target / "model.safetensors").read_text() == "new"
        manifest = read_manifest(target)
        assert manifest.writer == "test"
        assert sorted(manifest.files) == ["base/README.md", "config.json", "model.safetensors"]
        assert manifest.folders == ("base",)
        after = listing(tmp_path)
        outside = {k for k in set(before) | set(after) if not k.startswith(target.name)}
        assert all(before.get(k) == after.get(k) for k in outside)  # nothing else changed
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no tmp/old left
    else:
        with pytest.raises(OutputError, match=fragment):
            check_output_folder(target, overwrite, protect)
        with pytest.raises(OutputError, match=fragment):
            _write_export(target, overwrite, protect)
        assert listing(tmp_path) == before


def test_overwrite_removes_exactly_the_listed_files(tmp_path):
    folder = _write_export(tmp_path / "ckpt", extra=("old-only.txt",))
    _write_export(folder, overwrite=True)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "base",
        "base/README.md",
        "config.json",
        MANIFEST,
        "model.safetensors",
    ]


def test_a_failed_folder_write_leaves_the_old_export(tmp_path):
    folder = _write_export(tmp_path / "ckpt", text="old")
    before = listing(tmp_path)
    with pytest.raises(RuntimeError), staged_folder(folder, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise RuntimeError("killed")
    assert listing(tmp_path) == before


def test_a_user_file_added_during_the_work_stops_the_replacement(tmp_path):
    folder = _write_export(tmp_path / "ckpt", text="old")
    with pytest.raises(OutputError, match="late.txt was not written"), staged_folder(folder, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_text("new")
        (folder / "late.txt").write_text("mine")
    assert (folder / "late.txt").read_text() == "mine" and (folder / "model.safetensors").read_text() == "old"


def test_a_writer_that_leaves_a_link_writes_nothing(tmp_path):
    (tmp_path / "precious.txt").write_text("x")
    with pytest.raises(OutputError, match="link"), staged_folder(tmp_path / "ckpt") as tmp:
        (tmp / "weights").symlink_to(tmp_path / "precious.txt")
    assert not (tmp_path / "ckpt").exists()


def test_the_manifest_lists_sizes_and_hashes(tmp_path):
    folder = _write_export(tmp_path / "ckpt")
    raw = json.loads((folder / MANIFEST).read_text())
    assert raw["format"] == "lowrank_lab.output" and raw["writer"] == "test" and raw["written_at"]
    assert raw["files"]["config.json"]["bytes"] == len('{"lowrank": 1}')
    assert len(raw["files"]["config.json"]["sha256"]) == 64


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: user_files(t / "m"), lambda t: (t / "m",)),
        (
            lambda t: (user_files(t / "m") / "model.safetensors").write_bytes(b"") and t / "m" / "model.safetensors",
            None,
        ),
        (lambda t: (t / "m.zip").write_bytes(b"PK") and t / "m.zip", lambda t: (t / "m.zip",)),
        (lambda t: "tiny-llama", lambda t: ()),
        (lambda t: None, lambda t: ()),
    ],
)
def test_source_paths(tmp_path, make, expected):
    source = make(tmp_path)
    if expected is None:  # a lone .safetensors protects the folder it lies in
        assert source_paths(tmp_path / "m" / "model.safetensors") == (tmp_path / "m",)
    else:
        assert source_paths(source) == expected(tmp_path)
