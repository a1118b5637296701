"""Memory back to the system: a fixed mmap threshold for glibc's malloc, and a mapped model's pages.

glibc serves an allocation above its mmap threshold from a mapping of its own, unmapped when
freed. The threshold starts at 128 KiB but rises each time the process frees such a block (up to
32 MiB), after which tensors of a few MiB — a block's activations, 19 MiB for smollm2-135m at
32 × 256 calibration tokens — come from the heap, which fragments between the small
allocations that outlive them and is rarely returned. A compression run grew its resident memory
by a few hundred MB that way. A fixed threshold (setting it turns the rise off) keeps every
tensor of at least :data:`MMAP_THRESHOLD` in a mapping of its own.

This changes the process, so only the process's own entry points call it (``python -m
lowrank_lab``, and the app as it starts a background job), never an import of the package.
:func:`page_out` changes nothing but where a mapped file's pages are: the engine calls it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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


# -- pages of a mapped model file ------------------------------------------------------------

_MADV_PAGEOUT = 21  # Linux ≥ 5.4 (mman-common.h)


def page_out(tensor) -> bool:
    """Let the kernel reclaim the pages of a tensor that is a view of a mapped file.

    A model loaded from safetensors is a private mapping of its file: every page read stays in
    the process's resident memory (0.54 GB for smollm2-135m once each weight was read). After the
    engine has copied a block's weights, their pages are handed back with ``MADV_PAGEOUT``, which
    never changes what the memory holds: a clean page is dropped and read from the file again on
    the next access; a page written to (copied on write) stays in memory, or goes to swap where
    there is swap, its values kept either way.
    Anonymous memory (a model converted in memory) and device files are left alone.

    Returns True where the pages were handed back; False elsewhere (not Linux, not a mapped
    regular file, less than a page, or a kernel without ``MADV_PAGEOUT``).
    """
    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = _page_size()
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor only
    if last <= first or not _in_mapped_file(start, end):
        return False
    libc = _libc()
    if libc is None:
        return False
    return libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_PAGEOUT) == 0


def page_out_module(module) -> int:
    """:func:`page_out` for every parameter and buffer of ``module``; returns how many were handed back."""
    seen: set[int] = set()
    count = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            count += page_out(tensor.detach())
    return count


def _page_size() -> int:
    import mmap

    return mmap.PAGESIZE


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def _in_mapped_file(start: int, end: int) -> bool:
    """Whether [start, end) lies inside one mapping of a regular file (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, _, high = fields[0].partition("-")
                if int(low, 16) <= start and end <= int(high, 16):
                    path = fields[5].strip() if len(fields) > 5 else ""
                    return path.startswith("/") and not path.startswith("/dev/")
    except OSError:
        return False
    return False
