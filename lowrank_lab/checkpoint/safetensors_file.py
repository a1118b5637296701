"""Checking a safetensors file before reading it: a valid header, every tensor inside the file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from lowrank_lab.errors import CheckpointError, LowrankLabError, ModelLoadError


def check_safetensors(path: Path, error: type[LowrankLabError] = ModelLoadError) -> None:
    """Check that a safetensors file's header is valid and every tensor lies inside the file.

    Args:
        path: the file.
        error: the exception to raise (a compressed checkpoint raises ``CheckpointError``).

    Raises:
        error: the file is truncated or corrupt, naming the file.
    """
    size = path.stat().st_size
    problem = None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                problem = "it is shorter than a safetensors header"
            else:
                n = int.from_bytes(head, "little")
                if n > size - 8 or n > 100 * 2**20:
                    problem = f"its header claims {n} bytes but the file has {size}"
                else:
                    header = json.loads(f.read(n))
                    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                    if 8 + n + end > size:
                        problem = f"it is truncated: its tensors need {8 + n + end} bytes but the file has {size}"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        problem = f"its header cannot be read ({err})"
    if problem:
        raise error(f"{path} is not a valid safetensors file: {problem}. Download or copy it again.")


def tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a checkpoint's safetensors file, after checking it is complete.

    Raises:
        CheckpointError: the file is missing, truncated or its header is corrupt.
    """
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing; a compressed checkpoint folder holds {weights.name}")
    check_safetensors(weights, CheckpointError)
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({err}); export it again") from None
