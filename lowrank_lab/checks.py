"""Argument checks the core shares: a positive integer (a rank, a count) and a fraction in (0, 1]."""

from __future__ import annotations

import numbers


def is_positive_int(value: object) -> bool:
    """True for an integer ≥ 1 (Python or NumPy), False for anything else, ``True`` included."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def is_fraction(value: object) -> bool:
    """True for a real number in (0, 1] (Python or NumPy), False for anything else, ``True`` included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value <= 1
