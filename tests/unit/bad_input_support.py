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


def hostile(root: Path) -> dict[str, Path]:
    """The paths a careless or hostile user passes, made under ``root``; name → path."""
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    p = {name: root / name for name in ("file.txt", "dir", "fifo", "link", "dangling", "user")}
    p["file.txt"].write_text("a user's file\n")
    p["dir"].mkdir()
    os.mkfifo(p["fifo"])
    p["link"].symlink_to(p["file.txt"])
    p["dangling"].symlink_to(root / "gone")
    user_files(p["user"])
    p["under_file"] = p["file.txt"] / "out"
    p["short.txt"] = root / "short.txt"
    p["short.txt"].write_text("only a few words here\n")
    p["binary.txt"] = root / "binary.txt"
    p["binary.txt"].write_bytes(b"\x00\x01\x02" * 50)
    p["empty.txt"] = root / "empty.txt"
    p["empty.txt"].write_text("")
    p["latin1.txt"] = root / "latin1.txt"
    p["latin1.txt"].write_bytes("café au lait".encode("latin-1"))
    p["not.zip"] = root / "not.zip"
    p["not.zip"].write_text("this is not a zip")
    p["bomb.zip"] = root / "bomb.zip"
    with zipfile.ZipFile(p["bomb.zip"], "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/model.safetensors", b"\0" * (64 * 2**20))  # 64 MiB of zeros: ~1000-fold
    p["escape.zip"] = root / "escape.zip"
    with zipfile.ZipFile(p["escape.zip"], "w") as zf:
        zf.writestr("../../outside.txt", "x")
    return p


def run_cli(capsys, *argv: str) -> tuple[int, str, dict]:
    """Run the command line in-process with ``--json``: (exit status, the ``error:`` line, the JSON object)."""
    import json

    from lowrank_lab.cli import main

    code = main([*map(str, argv), "--json"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    last = captured.out.strip().splitlines()[-1] if captured.out.strip() else "{}"
    return code, (errors[-1] if errors else ""), json.loads(last, parse_constant=_not_json)


def _not_json(name: str):
    raise AssertionError(f"the --json line holds {name}, which is not JSON")


class LoadSpy:
    """Counts the models a command loads (and loads them): a check that fails before any work loads none."""

    def __init__(self, monkeypatch, *modules):
        from lowrank_lab.models import load_model

        self.calls = 0

        def counted(*args, **kwargs):
            self.calls += 1
            return load_model(*args, **kwargs)

        for module in modules:
            monkeypatch.setattr(module, "load_model", counted)
