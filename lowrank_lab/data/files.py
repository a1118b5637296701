"""Reading a user's file from disk: only a regular file, only up to a size limit, with a clear refusal otherwise.

A FIFO would block forever, ``/dev/zero`` never ends, and a folder or a broken link has no
bytes to read: each gets a message that says what the path is and what to give instead,
before anything is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lowrank_lab.errors import ArgumentTypeError, DataError


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def user_path(path: object, what: str) -> Path:
    """``path`` as a Path (``~`` expanded), or a clear error for a value that is no path."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"{what} must be a file path (str or pathlib.Path), got {type(path).__name__}")
    text = os.fspath(path)
    if not text.strip():
        raise DataError(f"{what}: no file name given; give the path of a file")
    if "\0" in text:
        raise DataError(f"{what} {text!r} holds a NUL character; give a plain file path")
    return Path(text).expanduser()


def read_user_file(path: object, what: str, limit: int, fix: str = "give a UTF-8 text file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Args:
        path: the file.
        what: what it is for, for messages (e.g. ``"calibration text (--calibration-text)"``).
        limit: the most bytes it may have.
        fix: what to give instead, for messages.

    Raises:
        ArgumentTypeError: ``path`` is not a str or os.PathLike.
        DataError: the path is missing, a broken link, a folder, a FIFO, a device or a
            socket, unreadable, or larger than ``limit``.
    """
    p = user_path(path, what)
    try:
        info = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise DataError(f"{what} {p} is a broken symbolic link (its target is gone); {fix}") from None
        raise DataError(f"{what} {p} does not exist; {fix}") from None
    except NotADirectoryError:
        raise DataError(f"{what} {p} does not exist (a part of its path is a file, not a folder); {fix}") from None
    except OSError as err:
        raise DataError(f"{what} {p} cannot be read ({err.strerror}); {fix}") from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} {p} is a folder, not a file; {fix}")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise DataError(f"{what} {p} is {kind}, not a regular file, so it is not read; {fix}")
    if info.st_size > limit:
        raise DataError(
            f"{what} {p} is {_mib(info.st_size)}; the limit is {_mib(limit)}. Use a smaller sample of the file"
        )
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)  # a file that grows while it is read still stops at the limit
    except OSError as err:
        raise DataError(f"{what} {p} cannot be read ({err.strerror}); {fix}") from None
    if len(data) > limit:
        raise DataError(f"{what} {p} is over the limit of {_mib(limit)}. Use a smaller sample of the file")
    return data
