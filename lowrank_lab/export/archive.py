"""Writing folders atomically, and zip files whose member names are safe to extract.

A failed export must leave nothing half-written, so every export writes into a hidden
sibling folder and renames it into place at the end. Zip members are always relative paths
under one root folder with no ``..``, no absolute path and no drive letter (the rule of
:func:`~lowrank_lab.checkpoint.unzip.safe_member_name`), so extracting a download cannot write
outside the folder it is extracted into.
"""

from __future__ import annotations

import io
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from lowrank_lab.checkpoint.unzip import safe_member_name
from lowrank_lab.errors import CheckpointError

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


@contextmanager
def staged_folder(folder: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``folder``; on success it becomes ``folder``.

    On an exception the temporary folder is removed and ``folder`` is left as it was.

    Args:
        folder: the final folder. If it exists it must be empty, or (with ``overwrite``) a
            folder this library wrote (it has a config.json or an adapter_config.json).
        overwrite: replace an existing export.

    Raises:
        CheckpointError: ``folder`` exists and holds other things, or is a file.
    """
    folder = Path(folder).expanduser()
    _check_replaceable(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; choose a folder name for the export")
    if not any(folder.iterdir()):
        return
    ours = (folder / "config.json").exists() or (folder / "adapter_config.json").exists()
    if not overwrite:
        raise CheckpointError(f"{folder} already exists and is not empty; choose another folder or pass overwrite=True")
    if not ours:
        raise CheckpointError(
            f"{folder} holds files that are not a model export (no config.json); it is not replaced. "
            "Choose an empty or new folder."
        )


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


def zip_folder(folder: Path, zip_path: Path | None = None, root: str | None = None) -> Path:
    """Zip ``folder`` atomically to ``zip_path`` (default: ``<folder>.zip``); returns its path."""
    folder = Path(folder)
    zip_path = Path(zip_path) if zip_path else folder.with_name(folder.name + ".zip")
    tmp = zip_path.with_name(f".{zip_path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_zip(folder, tmp, root)
        tmp.replace(zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return zip_path


def zip_bytes(folder: Path, root: str | None = None) -> bytes:
    """The zip of ``folder`` as bytes (for a download button)."""
    buffer = io.BytesIO()
    write_zip(folder, buffer, root)
    return buffer.getvalue()
