"""Large blocks of memory back to the system when freed: a fixed mmap threshold for glibc's malloc.

glibc serves an allocation above its mmap threshold from a mapping of its own, unmapped when
freed. The threshold starts at 128 KiB but rises each time the process frees such a block (up to
32 MiB), after which tensors of a few MiB — a block's activations, 19 MiB for smollm2-135m at
32 × 256 calibration tokens — come from the heap, which fragments between the small
allocations that outlive them and is rarely returned. A compression run grew its resident memory
by a few hundred MB that way. A fixed threshold (setting it turns the rise off) keeps every
tensor of at least :data:`MMAP_THRESHOLD` in a mapping of its own.

This changes the process, so only the process's own entry points call it (``python -m
lowrank_lab``, and the app as it starts a background job), never an import of the package.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 1 << 20  # bytes: a 1 MiB tensor and up gets its own mapping
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def release_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; returns False where that is not possible (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
