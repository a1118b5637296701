"""Folder outputs: staged in a hidden sibling, replaced only while their manifest lists all they hold."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lowrank_lab.errors import OutputError
from lowrank_lab.outputs.manifest import MANIFEST, Manifest, _sha256, _walk, read_manifest, write_manifest
from lowrank_lab.outputs.paths import (
    OVERWRITE_HINT,
    PathLike,
    _check_name,
    _check_overwrite_flag,
    _check_parent,
    _check_protected,
    _sibling,
    as_path,
)


def _check_owned(folder: Path) -> Manifest:
    """The manifest of an existing, non-empty ``folder`` that lowrank_lab may replace, or a refusal."""
    files, folders, others = _walk(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        example = (files or others or folders)[0]
        raise OutputError(
            f"{folder} holds files lowrank_lab did not write (it has no {MANIFEST}), e.g. {example}; "
            "nothing in it is replaced. Choose a new or empty folder"
        )
    if others:
        raise OutputError(
            f"{folder / others[0]} is a link or a special file, which lowrank_lab never writes; "
            f"{folder} is not replaced. Move it away or choose another folder"
        )
    for name in files:
        if name == MANIFEST:
            continue
        record = manifest.files.get(name)
        if record is None:
            raise OutputError(
                f"{folder / name} was not written by lowrank_lab (its {MANIFEST} does not list it); "
                f"{folder} is not replaced. Move that file away or choose another folder"
            )
        p = folder / name
        if p.stat().st_size != record.bytes or (record.sha256 is not None and _sha256(p) != record.sha256):
            raise OutputError(
                f"{folder / name} was changed after lowrank_lab wrote it; {folder} is not replaced. "
                "Keep your copy elsewhere, or choose another folder"
            )
    needed = set(manifest.folders) | {str(Path(n).parent.as_posix()) for n in manifest.files}
    for name in folders:
        if name not in needed and not any(n.startswith(name + "/") for n in manifest.files):
            raise OutputError(
                f"{folder / name} is a folder lowrank_lab did not make; {folder} is not replaced. "
                "Move it away or choose another folder"
            )
    return manifest


def check_output_folder(folder: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Check, before any work, that a folder may be written at ``folder``.

    A folder that does not exist or is empty may be written. An existing one is replaced only
    with ``overwrite`` and only when lowrank_lab wrote it (see the module docstring).

    Args:
        folder: the folder to write.
        overwrite: replace a folder that lowrank_lab wrote.
        protect: paths (model sources) the output must not be, contain or lie inside.

    Returns:
        ``folder`` as an absolute path.

    Raises:
        OutputError: naming the file or the reason that stops the write.
    """
    folder = as_path(folder, "the output folder")
    _check_overwrite_flag(overwrite)
    _check_name(folder)
    _check_protected(folder, protect)
    if folder.is_symlink():
        raise OutputError(
            f"{folder} is a symbolic link; lowrank_lab never writes through a link. Give the real path, "
            "or remove the link"
        )
    if not folder.exists():
        _check_parent(folder)
        return folder
    if not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; choose a folder name for the output")
    try:
        first = next(iter(folder.iterdir()), None)
    except OSError as err:
        raise OutputError(f"cannot read {folder} ({err.strerror}); choose a folder you can read and write") from None
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot replace {folder}: no permission to write into {folder.parent}")
    if first is None:
        return folder
    if not overwrite:
        raise OutputError(
            f"{folder} already exists and is not empty (it holds {first.name}); choose a new or empty folder, "
            f"or {OVERWRITE_HINT} to replace a folder lowrank_lab wrote"
        )
    _check_owned(folder)
    return folder


@contextmanager
def staged_folder(
    folder: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = (), writer: str = "lowrank_lab"
) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``folder`` to write; on success it becomes ``folder``.

    The checks of :func:`check_output_folder` run first and again before the rename. The
    manifest is written last, listing every file the caller wrote. With ``overwrite`` an old
    folder that lowrank_lab wrote is moved aside and exactly the files its manifest lists are
    removed. On an exception the temporary folder is removed and ``folder`` is left as it was.

    Args:
        folder: the final folder.
        overwrite: replace a folder lowrank_lab wrote.
        protect: paths (model sources) the output must not be, contain or lie inside.
        writer: what writes it, for the manifest (e.g. ``save_compressed``).

    Raises:
        OutputError: see :func:`check_output_folder`.
    """
    folder = check_output_folder(folder, overwrite, protect)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(folder, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        write_manifest(tmp, writer)
        _commit_folder(tmp, folder, overwrite, protect)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder; rmtree never follows links


def _commit_folder(tmp: Path, folder: Path, overwrite: bool, protect: Iterable[PathLike]) -> None:
    check_output_folder(folder, overwrite, protect)  # again: something may have changed while we worked
    if not folder.exists():
        _rename(tmp, folder)
        return
    if not any(folder.iterdir()):
        _rename(tmp, folder)  # rename replaces an empty folder, and fails on a non-empty one
        return
    manifest = _check_owned(folder)
    old = _sibling(folder, "old")
    folder.rename(old)
    _rename(tmp, folder)
    _remove_listed(old, manifest)


def _rename(tmp: Path, folder: Path) -> None:
    try:
        tmp.rename(folder)
    except OSError as err:
        raise OutputError(
            f"cannot move the finished output into {folder} ({err.strerror}); it is left as it was"
        ) from None


def _remove_listed(old: Path, manifest: Manifest) -> None:
    """Remove what the manifest lists from the moved-aside folder, then the folder if it is empty.

    Anything unlisted (a file that appeared after the last check) is left where it is, in the
    hidden ``.<name>.old-*`` sibling, rather than deleted.
    """
    for name in [*manifest.files, MANIFEST]:
        p = old / name
        if p.is_file() and not p.is_symlink():
            p.unlink()
    for name in sorted({*manifest.folders, *(Path(n).parent.as_posix() for n in manifest.files)}, reverse=True):
        p = old / name
        if name != "." and p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()
    if not any(old.iterdir()):
        old.rmdir()
