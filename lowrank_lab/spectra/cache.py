"""An on-disk cache of singular values, keyed by a hash of each matrix's bytes.

The key covers the weight's exact bytes, shape, dtype and the algorithm version, so a changed
weight is a miss and an identical matrix in another model is a hit. Values are stored as
safetensors (never pickle), one small file per matrix.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch
import xxhash
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from lowrank_lab.cache import update_digest
from lowrank_lab.paths import cache_dir

ALGORITHM_VERSION = "gram-eigh-f64-v1"


def weight_digest(w: torch.Tensor) -> str:
    """A 128-bit content hash of a tensor's bytes, shape and dtype (XXH3, about 10 GB/s)."""
    h = xxhash.xxh3_128()
    h.update(f"{ALGORITHM_VERSION}|".encode())
    update_digest(h, w)
    return h.hexdigest()


class SpectrumCache:
    """Singular values on disk under ``folder`` (default: the lowrank_lab cache's ``spectra``)."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else cache_dir("spectra")
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.folder / f"{digest}.safetensors"

    def get(self, digest: str) -> np.ndarray | None:
        """The stored singular values, or None on a miss (or an unreadable entry)."""
        path = self._path(digest)
        try:
            return load_file(str(path))["s"]
        except (FileNotFoundError, SafetensorError, KeyError, OSError):
            return None

    def put(self, digest: str, s: np.ndarray) -> None:
        path = self._path(digest)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # per writer thread
        save_file({"s": np.ascontiguousarray(s, dtype=np.float64)}, str(tmp))
        tmp.replace(path)  # atomic, so a reader never sees half a file
