"""The manifest lowrank_lab writes into every folder it writes: what wrote it, when, and each file."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lowrank_lab.errors import OutputError
from lowrank_lab.outputs.paths import PathLike, as_path

MANIFEST = "lowrank_lab_manifest.json"
MANIFEST_FORMAT = "lowrank_lab.output"
MANIFEST_VERSION = 1
# Files up to this size are hashed: configs, cards, plans, tokenizers (what a person edits).
# Larger ones (weights) are checked by size: hashing them costs about a second per GB.
HASH_LIMIT = 64 * 2**20
_MAX_MANIFEST_BYTES = 16 * 2**20


@dataclass(frozen=True)
class FileRecord:
    """One file a manifest lists: its size, and its SHA-256 when it was small enough to hash."""

    bytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a folder's manifest says lowrank_lab wrote into it.

    Attributes:
        writer: the function that wrote the folder (``save_compressed``, ``save_adapter``, ...).
        written_at: when, as an ISO 8601 UTC time.
        files: relative POSIX path → record, for every file but the manifest itself.
        folders: relative paths of the sub-folders it made.
    """

    writer: str
    written_at: str
    files: dict[str, FileRecord]
    folders: tuple[str, ...] = ()


def _safe_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def read_manifest(folder: PathLike) -> Manifest | None:
    """The manifest of ``folder``, or None when it has none (or one that lowrank_lab cannot have written)."""
    path = as_path(folder) / MANIFEST
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("files"), dict):
        return None
    files = {}
    for name, entry in raw["files"].items():
        size = entry.get("bytes") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not _safe_relative(name) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return None
        if digest is not None and not isinstance(digest, str):
            return None
        files[name] = FileRecord(size, digest)
    folders = raw.get("folders", [])
    if not isinstance(folders, list) or not all(_safe_relative(f) for f in folders):
        return None
    return Manifest(str(raw.get("writer", "")), str(raw.get("written_at", "")), files, tuple(folders))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _walk(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(regular files, folders, anything else: links, FIFOs, devices) under ``folder``, relative, no link followed."""
    files, folders, others = [], [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        for d in list(dirs):
            rel = (rel_root / d).as_posix()
            if (Path(root) / d).is_symlink():
                others.append(rel)
                dirs.remove(d)
            else:
                folders.append(rel)
        for n in names:
            p = Path(root) / n
            rel = (rel_root / n).as_posix()
            (files if not p.is_symlink() and p.is_file() else others).append(rel)
    return sorted(files), sorted(folders), sorted(others)


def write_manifest(folder: PathLike, writer: str) -> Manifest:
    """List every file of ``folder`` in its manifest (the folder's writer calls this last).

    Raises:
        OutputError: the folder holds a link or a special file (lowrank_lab writes neither).
    """
    folder = as_path(folder)
    files, folders, others = _walk(folder)
    if others:
        raise OutputError(f"{folder / others[0]} is a link or a special file; lowrank_lab writes only plain files")
    records = {}
    for name in files:
        if name == MANIFEST:
            continue
        p = folder / name
        size = p.stat().st_size
        records[name] = FileRecord(size, _sha256(p) if size <= HASH_LIMIT else None)
    written_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest = Manifest(writer, written_at, records, tuple(folders))
    body = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "note": "lowrank_lab wrote this folder; with overwrite it replaces the folder only while it holds "
        "exactly these files, unchanged",
        "writer": manifest.writer,
        "library": _library_version(),
        "written_at": manifest.written_at,
        "files": {
            name: {"bytes": r.bytes, **({"sha256": r.sha256} if r.sha256 else {})} for name, r in records.items()
        },
        "folders": list(manifest.folders),
    }
    (folder / MANIFEST).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return manifest


def _library_version() -> str:
    from lowrank_lab.version import __version__

    return f"lowrank_lab {__version__}"
