"""Output paths: made absolute, checked against a protected source model, its folder checked writable."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path

from lowrank_lab.errors import ArgumentTypeError, OutputError

_MAX_NAME_BYTES = 200  # leaves room for the ".tmp-xxxxxxxx" of the temporary sibling under 255
OVERWRITE_HINT = "pass --overwrite (overwrite=True in Python)"

PathLike = str | os.PathLike


def as_path(path: object, what: str = "the output path") -> Path:
    """``path`` as an absolute :class:`Path` (``~`` expanded, ``..`` folded); links are not resolved.

    Raises:
        ArgumentTypeError: ``path`` is not a str or os.PathLike.
        OutputError: it is empty or holds a NUL character.
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"{what} must be a str or pathlib.Path, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise OutputError(f"{what} is empty; give a file or folder name")
    if "\0" in text:
        raise OutputError(f"{what} {text!r} holds a NUL character; give a plain file or folder name")
    return Path(os.path.abspath(os.path.expanduser(text)))


def source_paths(source: object) -> tuple[Path, ...]:
    """The paths a model source occupies, to protect from outputs: its folder, or its zip.

    A folder protects itself; a ``.zip`` checkpoint protects the zip; any other file (a
    ``.safetensors`` with its config beside it) protects the folder it lies in. A name that
    is not an existing path (a built-in, a hub id) protects nothing.
    """
    if isinstance(source, (list, tuple)):
        return tuple(p for s in source for p in source_paths(s))
    if source is None or not isinstance(source, (str, os.PathLike)):
        return ()
    try:
        path = as_path(source, "the source")
    except OutputError:
        return ()
    if path.is_dir():
        return (path,)
    if path.is_file():
        return (path,) if path.suffix.lower() == ".zip" else (path.parent,)
    return ()


def _real(path: Path) -> Path:
    """``path`` with every link resolved, also when ``path`` itself does not exist yet."""
    return Path(os.path.realpath(path))


def _check_protected(out: Path, protect: Iterable[PathLike] | PathLike | None) -> None:
    if protect is None or isinstance(protect, (str, os.PathLike)):
        protect = () if protect is None else (protect,)
    real_out = _real(out)
    for guarded in protect:
        for p in source_paths(guarded):
            real = _real(p)
            if real_out == real:
                how = "is"
            elif real in real_out.parents:
                how = "lies inside"
            elif real_out in real.parents:
                how = "contains"
            else:
                continue
            raise OutputError(
                f"{out} {how} the source model {p}; writing there could replace or delete the model itself. "
                "Choose an output path outside the model's folder"
            )


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 120 else f"{text[:60]}…{text[-50:]}"


def _check_name(path: Path) -> None:
    if path == path.parent or not path.name or path.name in (".", ".."):
        raise OutputError(f"{path} is not a file or folder name; give a path such as out/result")
    too_long = [part for part in path.parts if len(part.encode("utf-8", "surrogateescape")) > 255]
    if too_long or len(str(path).encode("utf-8", "surrogateescape")) > 4000:
        what = f"a part of it has {len(too_long[0])} characters" if too_long else f"it has {len(str(path))} characters"
        raise OutputError(f"the path {_short(path)} is too long for the file system ({what}); use a shorter one")
    if len(path.name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise OutputError(f"the name {path.name[:40]}… is too long ({len(path.name)} characters); use a shorter name")


def _check_parent(path: Path) -> None:
    """The folder that will hold ``path`` exists or can be made, and can be written to."""
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise OutputError(
                f"{ancestor} is a broken symbolic link, so {path} cannot be made under it; "
                "fix or remove the link, or choose another location"
            )
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"{ancestor} is a file, not a folder, so {path} cannot be made under it; choose another location"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {ancestor} (no permission); choose a folder you can write to")


def _kind_of(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_overwrite_flag(overwrite: object) -> None:
    if not isinstance(overwrite, bool):
        raise ArgumentTypeError(f"overwrite must be True or False, got {type(overwrite).__name__} {overwrite!r}")


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")
