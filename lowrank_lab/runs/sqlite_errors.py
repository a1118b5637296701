"""SQLite errors as RunStoreError: what went wrong with the store's file, in words, and what to do."""

from __future__ import annotations

import sqlite3
from functools import wraps
from pathlib import Path

from lowrank_lab.errors import RunStoreError


def reason_of(err: sqlite3.Error) -> str:
    name = getattr(err, "sqlite_errorname", "")
    text = str(err).lower()
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in text or "malformed" in text:
        return "corrupt"
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return "locked"
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return "read-only"
    return "io"


FIX = {
    "corrupt": "lowrank_lab left it untouched; move it aside (or set LOWRANK_LAB_RUNS to another file) to start a new store",
    "locked": "another process holds it; close that process or try again in a moment",
    "read-only": "give this user write access to the file and its folder, or set LOWRANK_LAB_RUNS to another file",
    "io": "check the disk and the file's permissions, or set LOWRANK_LAB_RUNS to another file",
}


def store_error(path: Path, err: sqlite3.Error, doing: str) -> RunStoreError:
    """A :class:`RunStoreError` for a SQLite error met while ``doing`` something with ``path``."""
    reason = reason_of(err)
    what = {"corrupt": "is not a readable SQLite database", "locked": "is locked",
            "read-only": "is read-only", "io": "could not be used"}[reason]  # fmt: skip
    return RunStoreError(f"the run store {path} {what} while {doing} ({err}); {FIX[reason]}", reason)


def translated(doing: str):
    """Turn SQLite errors raised by a store method into RunStoreError naming the file."""

    def wrap(fn):
        @wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as err:
                raise store_error(self.path, err, doing) from None

        return inner

    return wrap
