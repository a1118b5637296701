"""Numbers as people read them: parameter counts, sizes, percentages, matrix labels."""

from __future__ import annotations

import math


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


def sig(x: float, digits: int = 4) -> str:
    """A measured number to ``digits`` significant digits, whole numbers with thousands separators.

    ``18.8634`` → ``18.86``, ``3211.351`` → ``3,211``, ``20629.4`` → ``20,629``, ``0.51234`` → ``0.5123``.
    """
    if x is None or not math.isfinite(x):
        return str(x)
    if x == 0 or abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    decimals = digits - 1 - math.floor(math.log10(abs(x)))
    return f"{x:,.{decimals}f}"


def ratio(x: float) -> str:
    """A ratio such as compressed / dense: ``1.32×``, ``0.842×``, ``1,094×``."""
    return f"{sig(x, 3)}×"
