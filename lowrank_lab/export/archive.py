"""Zip files of exports, and the ownership-checked staged folder every export is written through.

Folders and files are written through :mod:`lowrank_lab.outputs`: into a hidden sibling that is
renamed into place, with a manifest of what was written, and nothing replaced that
lowrank_lab did not write. Zip members are always relative paths under one root folder with no
``..``, no absolute path and no drive letter (the rule of
:func:`~lowrank_lab.checkpoint.unzip.safe_member_name`), so extracting a download cannot write
outside the folder it is extracted into.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lowrank_lab import outputs
from lowrank_lab.checkpoint.unzip import safe_member_name
from lowrank_lab.errors import ArgumentTypeError, CheckpointError

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Weights barely compress (about 7% for float16); storing them keeps zipping fast.
_STORED_SUFFIXES = (".safetensors", ".bin")


def safe_folder_name(name: str) -> str:
    """Turn a free-form name (a model name, a path) into one safe path component.

    ``"/home/me/My Model"`` → ``"My-Model"``; ``"../x"`` → ``"x"``.

    Raises:
        CheckpointError: nothing usable is left (``""``, ``".."``, ``"///"``).
    """
    last = PurePosixPath(str(name).replace("\\", "/").rstrip("/")).name
    clean = _UNSAFE_CHARS.sub("-", last).strip(".-")
    if not clean:
        raise CheckpointError(
            f"{name!r} cannot name a folder; use letters, digits, '-', '_' or '.' (e.g. smollm2-135m-lowrank)"
        )
    return clean[:100]


def staged_folder(folder: Path, overwrite: bool = False, protect=(), writer: str = "lowrank_lab"):
    """The ownership-checked staged folder of :func:`lowrank_lab.outputs.staged_folder` (kept under its old name)."""
    return outputs.staged_folder(folder, overwrite, protect, writer)


def _members(folder: Path, root: str) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue  # never follow a link out of the export
        yield path, safe_member_name(f"{root}/{path.relative_to(folder).as_posix()}")


def write_zip(folder: Path, target, root: str | None = None) -> None:
    """Zip every regular file of ``folder`` under one root folder ``root`` in the archive.

    Args:
        folder: the folder to pack.
        target: a path or a writable binary file object.
        root: the top folder name inside the zip (default: ``folder``'s name), sanitised.
    """
    folder = Path(folder)
    root = safe_folder_name(root or folder.name)
    with zipfile.ZipFile(target, "w") as zf:
        for path, member in _members(folder, root):
            stored = path.suffix in _STORED_SUFFIXES
            zf.write(path, member, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)


def zip_path_of(folder: Path) -> Path:
    """Where ``zip=True`` puts the zip of ``folder``: ``<folder>.zip`` beside it."""
    folder = outputs.as_path(folder, "the output folder")
    return folder.with_name(folder.name + ".zip")


def zip_folder(
    folder: Path, zip_path: Path | None = None, root: str | None = None, overwrite: bool = False, protect=()
) -> Path:
    """Zip ``folder`` atomically to ``zip_path`` (default: ``<folder>.zip``); returns its path.

    Raises:
        OutputError: ``zip_path`` exists (without ``overwrite``), is a link or a folder, or lies
            in a protected path (see :func:`lowrank_lab.outputs.check_output_file`).
    """
    folder = Path(folder)
    zip_path = outputs.as_path(zip_path) if zip_path else zip_path_of(folder)
    with outputs.staged_file(zip_path, overwrite, protect) as tmp:
        write_zip(folder, tmp, root)
    return zip_path


def zip_bytes(folder: Path, root: str | None = None) -> bytes:
    """The zip of ``folder`` as bytes (for a download button)."""
    buffer = io.BytesIO()
    write_zip(folder, buffer, root)
    return buffer.getvalue()


def check_export_target(folder, overwrite: bool = False, zip: bool = False, protect=()) -> Path:
    """Check an export's folder (and its ``.zip`` when ``zip``) before anything is computed or written.

    Returns:
        The folder as an absolute path.

    Raises:
        OutputError: the folder or the zip cannot be written under the rules of :mod:`lowrank_lab.outputs`.
        ArgumentTypeError: ``zip`` or ``overwrite`` is not a bool.
    """
    if not isinstance(zip, bool):
        raise ArgumentTypeError(f"zip must be True or False, got {type(zip).__name__} {zip!r}")
    folder = outputs.check_output_folder(folder, overwrite, protect)
    if zip:
        outputs.check_output_file(zip_path_of(folder), overwrite, protect)
    return folder
