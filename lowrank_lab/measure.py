"""Measurements of one model's forward pass: latency and peak tensor memory.

Latency is timed in pairs (``paired_latency``): the two models run alternately on the same
input, so a busy machine slows both alike and the ratio of medians stays meaningful.

Peak memory is counted, not sampled: a ``TorchDispatchMode`` sees every tensor an operator
creates during the forward pass and adds its storage's bytes until Python frees it, so the
figure is the largest total of live activation bytes plus the model's own weights and buffers.
It is the same on any device and does not depend on the allocator's caching.
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (tied tensors once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of storages created inside the mode while they stay alive; keeps the peak."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        # Storages that existed before (weights, buffers, inputs) are not activations: their
        # views (a transposed weight, a reshaped input) must not be counted again.
        self._before = {id(t.untyped_storage()) for t in existing}
        self._storages: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._storages.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = id(storage), storage.nbytes()
            if key in self._storages or key in self._before or nbytes == 0:
                continue  # a view of a storage already counted, or of one from before
            self._storages.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_forward_memory(model: nn.Module, input_ids: torch.Tensor) -> int:
    """Peak bytes held during one forward pass: weights and buffers plus the largest live activations.

    Args:
        model: any module called as ``model(input_ids=...)``; not changed.
        input_ids: token ids, shape (B, T), int64.
    """
    counter = _LiveTensorBytes([*model.parameters(), *model.buffers(), input_ids])
    with torch.no_grad(), counter:
        out = model(input_ids=input_ids)
        del out
    return model_bytes(model) + counter.peak


@dataclass(frozen=True)
class Latency:
    """Median forward time of two models timed alternately on the same input."""

    first_ms: float
    second_ms: float
    repeats: int

    @property
    def ratio(self) -> float:
        """second / first: below 1 means the second model is faster."""
        return self.second_ms / self.first_ms


def paired_latency(first: nn.Module, second: nn.Module, input_ids: torch.Tensor, repeats: int = 5) -> Latency:
    """Time ``first`` and ``second`` alternately on ``input_ids`` (one warm-up each, then ``repeats`` pairs).

    Args:
        first, second: models called as ``model(input_ids=...)``; not changed.
        input_ids: token ids, shape (B, T), int64.
        repeats: timed pairs; the medians are reported.
    """
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for i in range(repeats + 1):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which goes first
            for which in order:
                model = (first, second)[which]
                start = time.perf_counter()
                model(input_ids=input_ids)
                if i:  # the first round warms up
                    times[which].append((time.perf_counter() - start) * 1000)
    return Latency(statistics.median(times[0]), statistics.median(times[1]), repeats)
