"""The compressed checkpoint's format: file names, the config's ``lowrank`` section, tensor names.

A compressed checkpoint is a folder::

    config.json          the original model's config plus a "lowrank" section (below)
    model.safetensors    dense tensors of untouched modules; for each factorized module
                         "<module>.A.weight" (r×in), "<module>.B.weight" (out×r) and, when the
                         layer has one, "<module>.B.bias" (out); tied tensors stored once
    rank_plan.json       the ranks as a lowrank_lab RankPlan
    load_lowrank.py      a loader that needs only torch, transformers and safetensors
    README.md            the model card with the measured figures
    tokenizer files      as the tokenizer's save_pretrained writes them

The ``lowrank`` section::

    {"format": "lowrank_lab.compressed", "format_version": 1, "library_version": "0.1.0",
     "method": "svd", "dtype": "float16", "architecture": "LlamaForCausalLM",
     "task": "causal-lm", "source": "smollm2-135m",
     "ranks": {"model.layers.0.self_attn.q_proj": 230, ...},
     "bias": ["<factorized modules whose B has a bias>"],
     "calibration": {...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.checks import is_positive_int
from lowrank_lab.dtypes import DTYPES
from lowrank_lab.errors import CheckpointError
from lowrank_lab.lowrank import LowRankLinear

FORMAT = "lowrank_lab.compressed"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # written instead when the weights are sharded
PLAN_FILE = "rank_plan.json"
CARD_FILE = "README.md"
LOADER_FILE = "load_lowrank.py"
SECTION = "lowrank"
# safetensors' names of the dtypes a checkpoint may hold (the header's "dtype" field).
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def factorized_modules(model: nn.Module) -> dict[str, LowRankLinear]:
    """Every :class:`LowRankLinear` of ``model``, by module name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def factor_names(module: str) -> tuple[str, str, str]:
    """The tensor names of a factorized module: A weight (r×in), B weight (out×r), B bias (out)."""
    return f"{module}.A.weight", f"{module}.B.weight", f"{module}.B.bias"


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` (detached) with every shared tensor (tied weights) once, under its first name.

    Works on the meta device too (a skeleton has no storage, so sharing is read from identity).
    """
    state = model.state_dict(keep_vars=True)
    return {name: state[name].detach() for name, first in alias_map(state).items() if name == first}


def alias_map(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Each name of a ``state_dict(keep_vars=True)`` → the first name holding the same tensor (or itself)."""
    first: dict[tuple, str] = {}
    out: dict[str, str] = {}
    for name, tensor in state.items():
        if tensor.is_meta or tensor.numel() == 0:
            key = (id(tensor),)
        else:
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        out[name] = first.setdefault(key, name)
    return out


def head_is_untied(model: nn.Module) -> bool:
    """True when the model has an output head that does not share the input embedding's weight.

    A factorized head no longer shares it, so its config must say the two are untied (else
    transformers would tie them again on load, overwriting the head).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return head is not None and (embed is None or getattr(head, "weight", None) is not embed.weight)


def count_elements(tensors: Mapping[str, torch.Tensor], floating_only: bool = True) -> int:
    return sum(t.numel() for t in tensors.values() if t.is_floating_point() or not floating_only)


@dataclass(frozen=True)
class LowrankSection:
    """The ``lowrank`` section of a compressed checkpoint's config.json.

    Attributes:
        ranks: factorized module name (as ``named_modules()`` gives it) → rank.
        bias: the factorized modules whose ``B`` carries a bias.
        method: how the factors were made (``svd``, ``whitened``, ``pca``, ...).
        dtype: the floating-point type of the stored tensors.
        architecture: the transformers class to rebuild (``LlamaForCausalLM``).
        task: ``causal-lm`` or ``encoder``.
        source: the model it was made from, in words.
        library_version: the lowrank_lab version that wrote it.
        calibration: how it was calibrated (empty for plain SVD).
        format, format_version: what this section describes, for forward compatibility.
    """

    ranks: dict[str, int]
    bias: tuple[str, ...]
    method: str
    dtype: str
    architecture: str
    task: str
    source: str
    library_version: str
    calibration: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "library_version": self.library_version,
            "method": self.method,
            "dtype": self.dtype,
            "architecture": self.architecture,
            "task": self.task,
            "source": self.source,
            "ranks": dict(self.ranks),
            "bias": list(self.bias),
            "calibration": self.calibration,
        }

    @classmethod
    def from_config(cls, config: dict, where: Path) -> LowrankSection:
        """Read and check the section of a config.json's contents.

        Args:
            config: the parsed config.json.
            where: the config file, for messages.

        Raises:
            CheckpointError: the section is missing, from a newer format, or malformed.
        """
        raw = config.get(SECTION)
        if not isinstance(raw, dict):
            raise CheckpointError(
                f"{where} has no '{SECTION}' section, so it is not a lowrank_lab compressed checkpoint; "
                "load a plain Hugging Face folder with lowrank_lab.load_model or from_pretrained"
            )
        if raw.get("format") != FORMAT:
            raise CheckpointError(f"{where}: the '{SECTION}' section's format is {raw.get('format')!r}, not {FORMAT!r}")
        version = raw.get("format_version")
        if not is_positive_int(version):
            raise CheckpointError(f"{where}: the '{SECTION}' section's format_version {version!r} is not a version")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{where} was written in format version {version} by lowrank_lab {raw.get('library_version')}; "
                f"this lowrank_lab reads up to version {FORMAT_VERSION}: upgrade lowrank_lab"
            )
        ranks = raw.get("ranks")
        if not isinstance(ranks, dict):
            raise CheckpointError(f"{where}: the '{SECTION}' section has no 'ranks' object (module name → rank)")
        for name, rank in ranks.items():
            if not is_positive_int(rank):
                raise CheckpointError(f"{where}: the rank of {name} is {rank!r}; ranks must be positive integers")
        bias = raw.get("bias", [])
        if not isinstance(bias, list) or any(b not in ranks for b in bias):
            raise CheckpointError(f"{where}: the '{SECTION}' section's 'bias' must list factorized module names")
        strings = {k: raw.get(k) for k in ("method", "dtype", "architecture", "task")}
        missing = [k for k, v in strings.items() if not isinstance(v, str) or not v]
        if missing:
            raise CheckpointError(f"{where}: the '{SECTION}' section lacks {', '.join(missing)}")
        if strings["dtype"] not in DTYPES:
            raise CheckpointError(f"{where}: dtype {strings['dtype']!r} is not one of {', '.join(DTYPES)}")
        calibration = raw.get("calibration") or {}
        return cls(
            ranks=dict(ranks),
            bias=tuple(bias),
            calibration=calibration if isinstance(calibration, dict) else {"description": str(calibration)},
            source=str(raw.get("source", "")),
            library_version=str(raw.get("library_version", "")),
            format_version=version,
            **strings,
        )
