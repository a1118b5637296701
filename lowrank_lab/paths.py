"""Where lowrank_lab keeps its caches (converted models, spectra, tokenizers)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LOWRANK_LAB_CACHE"


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under the lowrank_lab cache.

    The root is ``$LOWRANK_LAB_CACHE`` when set, else ``$XDG_CACHE_HOME/lowrank_lab``, else
    ``~/.cache/lowrank_lab``.

    Args:
        *parts: sub-folder names below the root.

    Returns:
        The folder's path; it exists on return.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lowrank_lab"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
