"""Explicit keyed caches, shared by every session of the app: a lock per key, a byte limit, LRU.

Calibration statistics, whitened decompositions and loss gradients take seconds to minutes,
and the app shares them between sessions. A :class:`KeyedCache` makes that safe and bounded:

- one computation per key: a second caller of a key that is being computed waits for it and
  gets its value, while callers of other keys go ahead (no lock is held while computing);
- a byte limit: the tensors and arrays a value holds are counted, and the least recently used
  entries go first once the total passes the limit (a value larger than the limit is returned
  but not kept);
- keys that name a model by what it holds (:func:`model_digest`), not by ``id()`` or by
  in-place version counters, so an equal model hits and a changed one misses.

Who owns a cache decides its lifetime: the command line and scripts use the process's
defaults (e.g. :data:`lowrank_lab.compress.calibration.CALIBRATION_CACHE`), the app creates its
own through ``st.cache_resource`` and passes them in.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np
import torch
import xxhash
from torch import nn

T = TypeVar("T")
GiB = 2**30


def nbytes(value: object) -> int:
    """Bytes of the tensors and arrays in ``value``: itself, or inside mappings, sequences, dataclasses and objects."""
    seen: set[int] = set()

    def walk(v: object) -> int:
        if id(v) in seen:
            return 0
        seen.add(id(v))
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        if isinstance(v, np.ndarray):
            return v.nbytes
        if isinstance(v, Mapping):
            return sum(walk(k) + walk(x) for k, x in v.items())
        if isinstance(v, (list, tuple, set, frozenset)):
            return sum(walk(x) for x in v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return sum(walk(getattr(v, f.name)) for f in dataclasses.fields(v))
        if hasattr(v, "__dict__") and not isinstance(v, (type, nn.Module)):
            return sum(walk(x) for x in vars(v).values())
        return 0

    return walk(value)


def update_digest(h, t: torch.Tensor) -> None:
    """Feed a tensor's shape, dtype and exact bytes to the xxhash object ``h``."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")


def model_digest(model: nn.Module) -> str:
    """A 128-bit hash of what a model computes: its class, config, and every parameter and buffer.

    Two models with the same weights hash the same; any change to a weight changes the hash.
    XXH3 reads about 8 GB/s, so smollm2-135m (540 MB) takes about 70 ms.
    """
    h = xxhash.xxh3_128()
    h.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(_architecture_fields(config.to_dict()), sort_keys=True, default=str).encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        h.update(name.encode())
        update_digest(h, tensor)
    return h.hexdigest()


# Config fields that say how a model was stored or last saved, not what it computes: transformers
# rewrites ``dtype`` on save_pretrained and sets private fields on first use, so an untouched
# model would change its digest. The tensors' own dtypes are hashed with their bytes.
_VOLATILE_CONFIG = frozenset({"dtype", "torch_dtype", "transformers_version", "_name_or_path"})


def _architecture_fields(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG and not k.startswith("_")}


class _KeyLock:
    """The lock of one key, and how many callers hold or wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class KeyedCache:
    """A thread-safe map from hashable keys to computed values, with a byte limit (LRU).

    Args:
        max_bytes: keep at most this many bytes of tensors and arrays (see :func:`nbytes`).
        name: what it holds, for people.
    """

    def __init__(self, max_bytes: int = 4 * GiB, name: str = "cache"):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.max_bytes = max_bytes
        self.name = name
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._key_locks: dict[Hashable, _KeyLock] = {}
        self._lock = threading.Lock()  # guards the two dicts; never held while computing

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of ``key``, computed by ``compute()`` unless the cache holds it.

        Concurrent callers of one key share one computation; an exception in ``compute``
        reaches the caller that ran it and stores nothing (a waiting caller then computes).
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, _KeyLock())
            key_lock.users += 1
        try:
            with key_lock.lock:
                with self._lock:
                    if key in self._items:  # computed while this caller waited
                        self._items.move_to_end(key)
                        return self._items[key]
                value = compute()
                self._store(key, value)
                return value
        finally:
            with self._lock:
                key_lock.users -= 1
                if key_lock.users == 0:
                    del self._key_locks[key]

    def _store(self, key: Hashable, value: object) -> None:
        if nbytes(value) > self.max_bytes:
            return
        with self._lock:
            self._items[key] = value
            # Every entry is measured again: cached objects may have grown since they were added.
            sizes = {k: nbytes(v) for k, v in self._items.items()}
            total = sum(sizes.values())
            while total > self.max_bytes and len(self._items) > 1:
                oldest, _ = self._items.popitem(last=False)
                total -= sizes[oldest]

    def get(self, key: Hashable, default: object = None) -> object:
        """The value of ``key`` if the cache holds it (nothing is computed), else ``default``."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return default

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(nbytes(v) for v in self._items.values())

    def clear(self) -> None:
        """Drop every entry (computations under way finish and store their value)."""
        with self._lock:
            self._items.clear()
