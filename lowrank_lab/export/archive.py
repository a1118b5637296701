"""Zip files whose member names are safe to extract, written and read under the output rules.

Folders and files are written through :mod:`lowrank_lab.outputs` (a hidden sibling renamed
into place, a manifest of what was written, nothing replaced that lowrank_lab did not write).
Zip members are always relative paths
under one root folder with no ``..``, no absolute path and no drive letter, so extracting a
download cannot write outside the folder it is extracted into.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lowrank_lab import outputs
from lowrank_lab.errors import ArgumentTypeError, CheckpointError

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_DRIVE = re.compile(r"^[A-Za-z]:$")
# Weights barely compress (about 7% for float16); storing them keeps zipping fast.
_STORED_SUFFIXES = (".safetensors", ".bin")
# What a download may expand to. Our zips store weights (ratio 1) and deflate text (ratio
# under 20); a member that claims far more is a zip bomb.
MAX_EXTRACT_BYTES = 64 * 2**30
MAX_MEMBERS = 10_000
MAX_RATIO = 200
_RATIO_FLOOR = 2**20  # members smaller than this are never a bomb, whatever their ratio


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


def safe_member_name(name: str) -> str:
    """Sanitise a zip member name: relative, forward slashes, no ``..``, ``.`` or drive letters.

    ``"/etc/passwd"`` → ``"etc/passwd"``; ``"a/../../b"`` → ``"a/b"``; ``"C:\\\\x"`` → ``"x"``.

    Raises:
        CheckpointError: nothing is left of the name.
    """
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..") and not _DRIVE.match(p)]
    if not parts:
        raise CheckpointError(f"{name!r} is not a usable file name inside a zip")
    return "/".join(parts)


def is_safe_member_name(name: str) -> bool:
    """True when extracting ``name`` stays inside the target folder."""
    try:
        return safe_member_name(name) == name.rstrip("/")
    except CheckpointError:
        return False


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


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_zip_members(zf: zipfile.ZipFile, zip_path: Path, dest: Path) -> None:
    """Refuse a zip before extracting anything: unsafe names, too many members, a bomb, no room.

    Raises:
        CheckpointError: naming the member and the limit.
    """
    infos = zf.infolist()
    bad = [i.filename for i in infos if not is_safe_member_name(i.filename)]
    if bad:
        raise CheckpointError(
            f"{zip_path} holds unsafe file names ({', '.join(map(json.dumps, bad[:3]))}); it is not extracted"
        )
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(
            f"{zip_path} holds {len(infos):,} files, more than {MAX_MEMBERS:,}; it is not a model export"
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > MAX_RATIO:
            raise CheckpointError(
                f"{zip_path}: {info.filename} would expand {ratio:,.0f}-fold to {_gib(info.file_size)} (a zip bomb?); "
                f"exports never compress more than {MAX_RATIO}-fold, so it is not extracted"
            )
    total = sum(i.file_size for i in infos)
    if total > MAX_EXTRACT_BYTES:
        raise CheckpointError(
            f"{zip_path} would expand to {_gib(total)}, more than the {_gib(MAX_EXTRACT_BYTES)} limit; "
            "extract it yourself and load the folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise CheckpointError(f"{zip_path} needs {_gib(total)} to extract and {dest} has {_gib(free)} free; free space")


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Copy one member out, never more bytes than its header declares (whatever the stream holds)."""
    target = dest / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while chunk := src.read(2**20):
            written += len(chunk)
            if written > info.file_size:
                raise CheckpointError(f"{info.filename} holds more bytes than its zip header declares; not extracted")
            out.write(chunk)


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract a zip export into ``dest`` and return its top folder (the shallowest with a config).

    Every member is checked before anything is written: names stay inside ``dest``, at most
    :data:`MAX_MEMBERS` members, no member expanding more than :data:`MAX_RATIO`-fold, at most
    :data:`MAX_EXTRACT_BYTES` in all and no more than the free space.

    Raises:
        CheckpointError: the file is not a zip, a member name is unsafe (absolute, ``..``), the
            archive breaks a limit, or it holds no config.json / adapter_config.json.
    """
    zip_path, dest = Path(zip_path).expanduser(), Path(dest)
    try:
        mode = zip_path.stat().st_mode
    except OSError as err:
        raise CheckpointError(f"{zip_path} cannot be read ({err.strerror}); give a .zip file") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{zip_path} is not a regular file; give a .zip file")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            check_zip_members(zf, zip_path, dest)
            for info in zf.infolist():
                _extract_member(zf, info, dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as err:
        raise CheckpointError(f"{zip_path} is not a valid zip file ({err}); download it again") from None
    except RuntimeError as err:  # an encrypted member
        raise CheckpointError(f"{zip_path} cannot be read ({err}); give an unencrypted zip") from None
    configs = sorted([*dest.rglob("config.json"), *dest.rglob("adapter_config.json")], key=lambda p: len(p.parts))
    if not configs:
        raise CheckpointError(f"{zip_path} holds no config.json, so it is not a model export")
    return configs[0].parent


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
