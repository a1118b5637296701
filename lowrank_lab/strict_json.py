"""Strict JSON: what lowrank_lab prints or writes as JSON never holds NaN or Infinity.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no JSON parser but
Python's accepts. Here a non-finite number becomes ``null`` and the output says why, under
``"non_finite"``: the dotted path of each such value and what it was.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import PurePath

NON_FINITE_KEY = "non_finite"


def _describe(x: float) -> str:
    if math.isnan(x):
        return "NaN (not a number): the computation diverged or the model holds NaN weights"
    return f"{'+' if x > 0 else '-'}infinity: the value overflowed"


def clean(value: object, path: str = "", found: dict[str, str] | None = None) -> object:
    """``value`` with every non-finite float replaced by None; each replacement recorded in ``found``.

    Mappings, lists, tuples, dataclasses, NumPy scalars and arrays, and 0-d tensors are walked;
    paths and other objects become strings.
    """
    found = {} if found is None else found
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        found[path or "value"] = _describe(value)
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): clean(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy scalars and arrays, tensors
        return clean(value.tolist(), path, found)
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def dumps(value: object, **kwargs) -> str:
    """``json.dumps`` of :func:`clean` ``(value)``; a dict gets a ``"non_finite"`` entry when anything was replaced."""
    found: dict[str, str] = {}
    cleaned = clean(value, "", found)
    if found and isinstance(cleaned, dict):
        cleaned[NON_FINITE_KEY] = found
    return json.dumps(cleaned, allow_nan=False, **kwargs)
