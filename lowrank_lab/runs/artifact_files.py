"""Removing a run's saved files: only what lowrank_lab wrote, as its ownership manifest lists it.

A compressed checkpoint or adapter saved for a run carries ``lowrank_lab_manifest.json`` (see
:mod:`lowrank_lab.outputs`). Deleting the run removes exactly the files listed there (and the
folders they leave empty); a file someone put in the folder, or changed since, is left where it
is, and so is the folder around it. Nothing outside the store's artifact folder is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lowrank_lab.outputs import MANIFEST, read_manifest


@dataclass(frozen=True)
class Deleted:
    """What deleting a run did on disk.

    Attributes:
        removed: the artifact folders removed entirely.
        kept: ``"<path>: <why>"`` for each artifact left (wholly or partly) in place.
    """

    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


def remove_owned(path: Path, root: Path) -> str | None:
    """Remove one of the store's own artifact folders, as far as its manifest allows.

    Returns:
        None when it is gone; ``""`` when there was nothing to remove; else why (some of) it stays.
    """
    if path.is_symlink():
        return "a link, which lowrank_lab never writes"
    if not path.exists():
        return ""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return f"outside the store's folder {root}, so not lowrank_lab's to delete"
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is None:
        return f"it has no readable {MANIFEST}, so nothing in it is known to be lowrank_lab's"
    for name in [*manifest.files, MANIFEST]:
        p = path / name
        if p.is_file() and not p.is_symlink() and (name == MANIFEST or p.stat().st_size == manifest.files[name].bytes):
            p.unlink()
    parents = {*manifest.folders, *(Path(n).parent.as_posix() for n in manifest.files)}
    for name in sorted(parents, key=lambda n: n.count("/"), reverse=True):
        p = path / name
        if name != "." and p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()
    left = sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())
    if left:
        return f"kept {len(left)} file(s) lowrank_lab did not write or that changed since, e.g. {left[0]}"
    for p in sorted(path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        p.rmdir()  # only empty folders are left
    path.rmdir()
    return None
