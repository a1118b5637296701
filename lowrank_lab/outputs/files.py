"""Single-file outputs: refused when taken (unless overwrite) or a link; written to a sibling and renamed."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lowrank_lab.errors import ArgumentTypeError, OutputError
from lowrank_lab.outputs.paths import (
    OVERWRITE_HINT,
    PathLike,
    _check_name,
    _check_overwrite_flag,
    _check_parent,
    _check_protected,
    _kind_of,
    _sibling,
    as_path,
)


def check_output_file(path: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Check, before any work, that a single file may be written at ``path``.

    Args:
        path: the file to write.
        overwrite: an existing regular file may be replaced.
        protect: paths (model sources) the output must not be, contain or lie inside.

    Returns:
        ``path`` as an absolute path.

    Raises:
        OutputError: ``path`` is a link, a folder, a device or FIFO, an existing file without
            ``overwrite``, inside a protected path, or under a file or an unwritable folder.
    """
    given = path
    path = as_path(path)
    _check_overwrite_flag(overwrite)
    _check_name(path)
    if os.fspath(given).endswith(("/", os.sep)):
        raise OutputError(f"{os.fspath(given)} ends with a slash, so it names a folder; give a file name")
    _check_protected(path, protect)
    if path.is_symlink():
        raise OutputError(
            f"{path} is a symbolic link; lowrank_lab never writes through a link (it would change the "
            "file the link points to). Give the real path, or remove the link"
        )
    if path.exists():
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name, e.g. {path / 'result'}{path.suffix}")
        if not path.is_file():
            raise OutputError(f"{path} is {_kind_of(path)}, not a file; choose a file path")
        if not overwrite:
            raise OutputError(f"{path} already exists; choose another name, or {OVERWRITE_HINT} to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot replace {path}: no permission to write into {path.parent}")
        return path
    _check_parent(path)
    return path


@contextmanager
def staged_file(path: PathLike, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed to ``path``.

    The checks of :func:`check_output_file` run first and again just before the rename. On
    an exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: see :func:`check_output_file`.
    """
    path = check_output_file(path, overwrite, protect)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644))
    try:
        yield tmp
        _commit_file(tmp, path, overwrite, protect)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def _commit_file(tmp: Path, path: Path, overwrite: bool, protect: Iterable[PathLike]) -> None:
    check_output_file(path, overwrite, protect)  # something may have appeared while we worked
    if overwrite:
        os.replace(tmp, path)  # rename replaces a name; it never writes through a link
        return
    try:
        os.link(tmp, path)  # fails if the name was taken meanwhile: never replaces a file
    except FileExistsError:
        raise OutputError(f"{path} appeared while lowrank_lab was writing; it is left as it is") from None
    except OSError:  # a file system without hard links
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path} appeared while lowrank_lab was writing; it is left as it is") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def write_file(path: PathLike, data: bytes | str, overwrite: bool = False, protect: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` (text is written as UTF-8) to ``path`` atomically, under the rules above.

    Returns:
        The absolute path written.

    Raises:
        OutputError: see :func:`check_output_file`.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise ArgumentTypeError(f"write_file takes bytes or str, got {type(data).__name__}")
    with staged_file(path, overwrite, protect) as tmp:
        tmp.write_bytes(data)
    return as_path(path)
