"""Numbers as people read them: parameter counts, sizes, percentages, matrix labels."""

from __future__ import annotations


def params(n: int) -> str:
    """``134515008`` → ``134.5M``; small counts stay exact (``40,960``)."""
    if abs(n) >= 10_000_000:
        return f"{n / 1e6:.1f}M"
    if abs(n) >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n:,}"


def mib(n_bytes: float) -> str:
    """Bytes as MiB (KiB below one MiB)."""
    if abs(n_bytes) < 2**20:
        return f"{n_bytes / 2**10:.1f} KiB"
    return f"{n_bytes / 2**20:.1f} MiB"


def pct(fraction: float, digits: int = 1) -> str:
    return f"{100 * fraction:.{digits}f}%"


def matrix_label(name: str, kind: str, layer: int | None) -> str:
    """A short legend label: ``L3 mlp.up_proj``, or the name for matrices outside layers."""
    return name if layer is None else f"L{layer} {kind}"
