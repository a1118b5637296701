"""Loading a compressed checkpoint through :func:`load_model` (implemented with export)."""

from __future__ import annotations

from pathlib import Path

from lowrank_lab.errors import ModelLoadError


def load_compressed_folder(spec, path: Path):
    """Load a folder whose config.json has a ``lowrank`` section."""
    raise ModelLoadError(f"{path} is a compressed lowrank_lab checkpoint; this version cannot load those yet")
