"""Helpers of the table-driven bad-input tests: a listing of a user's files, before and after."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed) → what it is and, for a file, a hash of its bytes.

    Two equal listings mean nothing under ``root`` was created, removed, replaced or changed.
    """
    out = {}
    root = Path(root)
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[rel] = f"link → {os.readlink(p)}"
            elif stat.S_ISDIR(mode):
                out[rel] = "folder"
            elif stat.S_ISREG(mode):
                out[rel] = "file " + hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            else:
                out[rel] = "special"
    return out


def user_files(root: Path) -> Path:
    """A small tree of a user's own files under ``root``: the things lowrank_lab must never touch."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("my notes\n")
    (root / "config.json").write_text('{"app": "mine"}\n')  # an application's config, not an export
    (root / "adapter_config.json").write_text("{}\n")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return root


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
