"""Floating-point types: the three lowrank_lab loads and writes, their aliases and sizes."""

from __future__ import annotations

from typing import Literal

import torch

from lowrank_lab.errors import CheckpointError

Dtype = Literal["float32", "float16", "bfloat16"]
DTYPES: tuple[Dtype, ...] = ("float32", "float16", "bfloat16")
ALIASES: dict[str, Dtype] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
BYTES_PER_ELEMENT: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}


def normalize_dtype(dtype: str | torch.dtype, target: object = "the export") -> Dtype:
    """Return the canonical name (``float32``, ``float16``, ``bfloat16``) of a checkpoint's dtype.

    Args:
        dtype: a name (``fp16``, ``bf16``, ``float32``, ...) or a torch floating dtype.
        target: what is being written, for the message.

    Raises:
        CheckpointError: the dtype is none of the three, so no checkpoint is written or read in it.
    """
    name = str(dtype).removeprefix("torch.").lower() if dtype is not None else ""
    if name not in ALIASES:
        raise CheckpointError(
            f"cannot write {target} in dtype {dtype!r}: the export dtype must be one of "
            f"{', '.join(DTYPES)} (or fp32, fp16, bf16)"
        )
    return ALIASES[name]


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a name or alias (``fp16`` → ``torch.float16``)."""
    return getattr(torch, normalize_dtype(name))
