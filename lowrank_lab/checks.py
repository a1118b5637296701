"""Argument checks the core shares: a positive integer (a rank, a count) and a fraction in (0, 1]."""

from __future__ import annotations

import numbers


def is_positive_int(value: object) -> bool:
    """True for an integer ≥ 1 (Python or NumPy), False for anything else, ``True`` included."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def is_fraction(value: object) -> bool:
    """True for a real number in (0, 1] (Python or NumPy), False for anything else, ``True`` included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value <= 1


def require(value: object, types: type | tuple[type, ...], what: str, hint: str = "") -> None:
    """Raise :class:`~lowrank_lab.errors.ArgumentTypeError` unless ``value`` is one of ``types``.

    Args:
        value: the argument.
        types: what it must be.
        what: the argument's name in words, e.g. ``"compress's loaded model"``.
        hint: how to get the right thing, e.g. ``"load one with load_model"``.
    """
    from lowrank_lab.errors import ArgumentTypeError

    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False  # True is an int to Python, never a count or a size to us
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        names = names.replace("NoneType", "None")
        article = "an" if names[0] in "aeiouAEIOU" else "a"
        raise ArgumentTypeError(
            f"{what} must be {article} {names}, got {type(value).__name__} {value!r:.60}{'; ' + hint if hint else ''}"
        )


def require_int(value: object, what: str, minimum: int) -> int:
    """``value`` when it is an integer ≥ ``minimum``; ArgumentTypeError for a non-integer, SettingsError below."""
    from lowrank_lab.errors import SettingsError

    require(value, numbers.Integral, what)
    if value < minimum:
        raise SettingsError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def check_device(device: object):
    """``device`` as a torch.device that exists here (None: None), or a SettingsError saying what to use.

    ``cuda`` without a CUDA GPU (or with a CPU build of torch) is refused here, before any work,
    instead of failing deep inside torch.
    """
    import torch

    from lowrank_lab.errors import SettingsError

    if device is None:
        return None
    require(device, (str, torch.device), "device", "use 'cpu' or 'cuda'")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SettingsError(
            f"device {device!r} is not a device; use 'cpu' or 'cuda' ('cuda:N' for one of several GPUs)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(
                f"device {device!r}: this machine has no CUDA GPU (or torch was built without CUDA); use 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingsError(f"device {device!r}: there are {torch.cuda.device_count()} GPU(s), numbered from 0")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SettingsError(f"device {device!r}: Apple's MPS is not available here; use 'cpu'")
    elif dev.type != "cpu":
        raise SettingsError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return dev
