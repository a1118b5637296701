"""One entry point for every export format: what is available, how large it will be, the zip.

The Export page calls these; so can any program that holds a CompressedModel or a
TrainedAdapter.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lowrank_lab.checkpoint.format import PLAN_FILE, count_elements, unique_state_dict
from lowrank_lab.comparison import Comparison
from lowrank_lab.dtypes import normalize_dtype, torch_dtype
from lowrank_lab.errors import ArgumentTypeError, CheckpointError
from lowrank_lab.export.adapter import (
    RANK_PATTERN_FILE,
    check_adapter,
    peft_model_of,
    save_rank_pattern,
    write_adapter,
    write_merged,
)
from lowrank_lab.export.archive import check_export_target, safe_folder_name, staged_folder, zip_bytes
from lowrank_lab.export.compressed import check_compressed, write_compressed
from lowrank_lab.export.dense import write_dense
from lowrank_lab.finetune.result import TrainedAdapter
from lowrank_lab.models import CompressedModel, ParamCounts

ExportFormat = Literal["compressed", "dense", "adapter", "merged", "rank_pattern"]
EXPORT_FORMATS: dict[str, str] = {
    "compressed": "Compressed checkpoint (factors in safetensors, loads with load_compressed or load_lowrank.py)",
    "dense": "Dense Hugging Face folder (factors multiplied back; plain from_pretrained)",
    "rank_pattern": "Rank plan as PEFT rank_pattern JSON",
    "adapter": "LoRA adapter in PEFT format (adapter_config.json + adapter_model.safetensors)",
    "merged": "Adapter merged into its base model",
}
WEIGHTLESS: tuple[str, ...] = ("rank_pattern",)


def available_formats(compressed: CompressedModel | None, adapter: TrainedAdapter | None) -> list[str]:
    """The export formats that the given artifacts allow, in display order."""
    formats = []
    if compressed is not None:
        formats += ["compressed", "dense", "rank_pattern"]
    if adapter is not None:
        formats += ["adapter", "merged"]
    return formats


@dataclass(frozen=True)
class SizeEstimate:
    """How large an export will be, computed from element counts before anything is written.

    Attributes:
        elements: floating-point values stored.
        weight_bytes: bytes of the stored tensors in the chosen dtype.
        tokenizer_bytes: bytes of the tokenizer files (0 when there is none).
    """

    elements: int
    weight_bytes: int
    tokenizer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.tokenizer_bytes


def tokenizer_bytes(tokenizer) -> int:
    """Bytes the tokenizer's files take (written once to a temporary folder to measure them)."""
    if tokenizer is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="lowrank-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())


def _floats(model) -> tuple[int, int]:
    """(floating elements, bytes of non-floating tensors) of a model's stored tensors."""
    tensors = unique_state_dict(model)
    others = sum(t.numel() * t.element_size() for t in tensors.values() if not t.is_floating_point())
    return count_elements(tensors), others


def _elements(
    fmt: ExportFormat, compressed: CompressedModel | None, adapter: TrainedAdapter | None
) -> tuple[int, int, object]:
    """(floating elements, other bytes, tokenizer) an export of ``fmt`` stores."""
    if fmt in ("compressed", "dense"):
        floats, others = _floats(compressed.model)
        if fmt == "dense":  # every factorized layer multiplied back
            counts = ParamCounts.of_model(compressed.model)
            floats += counts.dense - counts.compressed
        return floats, others, compressed.tokenizer
    from peft import get_peft_model_state_dict  # heavy (seconds): imported on first use, not with lowrank_lab

    peft_model = peft_model_of(adapter)
    lora = count_elements(get_peft_model_state_dict(peft_model))  # exactly what PEFT saves
    base = count_elements(unique_state_dict(peft_model)) - lora
    if fmt == "adapter":  # an adapter on a compressed model ships that base (with its tokenizer) in base/
        with_base = adapter.base == "compressed"
        return lora + (base if with_base else 0), 0, adapter.tokenizer if with_base else None
    return base, 0, adapter.tokenizer


def estimate_size(
    fmt: ExportFormat, dtype: str, compressed: CompressedModel | None = None, adapter: TrainedAdapter | None = None
) -> SizeEstimate:
    """The size an export will have, from parameter counts (nothing is written but the tokenizer, to measure it).

    Raises:
        CheckpointError: an unknown format or dtype, or the artifact the format needs is missing.
    """
    _check_request(fmt, compressed, adapter)
    if fmt in WEIGHTLESS:
        return SizeEstimate(0, 0, 0)
    dtype = normalize_dtype(dtype)
    floats, others, tokenizer = _elements(fmt, compressed, adapter)
    weight_bytes = floats * torch_dtype(dtype).itemsize + others
    return SizeEstimate(floats, weight_bytes, tokenizer_bytes(tokenizer))


def _check_request(fmt: ExportFormat, compressed, adapter) -> None:
    if not isinstance(fmt, str) or fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    needs_adapter = fmt in ("adapter", "merged")
    if compressed is not None:
        check_compressed(compressed)
    if adapter is not None:
        check_adapter(adapter)
    if needs_adapter and adapter is None:
        raise CheckpointError(f"the {fmt!r} export needs a LoRA adapter; fine-tune one on the LoRA page first")
    if not needs_adapter and compressed is None:
        raise CheckpointError(f"the {fmt!r} export needs a compressed model; compress one on the Ranks page first")


def write_export(
    fmt: ExportFormat,
    folder: Path,
    dtype: str,
    compressed: CompressedModel | None = None,
    adapter: TrainedAdapter | None = None,
    comparison: Comparison | None = None,
) -> None:
    """Write an export of ``fmt`` into the existing, empty ``folder``.

    ``comparison`` is what was measured on ``compressed``: its model card shows it, and so does
    the card of an adapter's base when that base is ``compressed``.
    """
    if fmt == "compressed":
        write_compressed(compressed, folder, dtype, comparison=comparison)
    elif fmt == "dense":
        write_dense(compressed, folder, dtype)
    elif fmt == "rank_pattern":
        save_rank_pattern(compressed.plan, folder / RANK_PATTERN_FILE)
        (folder / PLAN_FILE).write_text(compressed.plan.to_json(model=compressed.source.source) + "\n", "utf-8")
    elif fmt == "adapter":
        base_comparison = comparison if adapter.compressed is not None and adapter.compressed is compressed else None
        write_adapter(adapter, folder, dtype, base_comparison)
    else:
        write_merged(adapter, folder, dtype)


def export(
    fmt: ExportFormat,
    folder: str | Path,
    dtype: str = "float32",
    compressed: CompressedModel | None = None,
    adapter: TrainedAdapter | None = None,
    overwrite: bool = False,
    comparison: Comparison | None = None,
) -> Path:
    """Write an export of ``fmt`` to ``folder`` atomically; returns the folder.

    Raises:
        CheckpointError: an unknown format or dtype, or a missing artifact.
        OutputError: the folder is taken, or is inside the source model (checked before writing).
    """
    _check_request(fmt, compressed, adapter)
    protect = _sources(compressed, adapter)
    folder = check_export_target(folder, overwrite, False, protect)
    dtype = normalize_dtype(dtype, folder)
    with staged_folder(folder, overwrite, protect, writer=f"export {fmt}") as tmp:
        write_export(fmt, tmp, dtype, compressed, adapter, comparison)
    return folder


def _sources(compressed: CompressedModel | None, adapter: TrainedAdapter | None) -> tuple[str, ...]:
    return tuple(a.source.source for a in (compressed, adapter) if a is not None and a.source is not None)


def export_zip(
    fmt: ExportFormat,
    name: str,
    dtype: str = "float32",
    compressed: CompressedModel | None = None,
    adapter: TrainedAdapter | None = None,
    comparison: Comparison | None = None,
) -> bytes:
    """An export of ``fmt`` as zip bytes whose members all sit under the folder ``name`` (sanitised).

    Raises:
        CheckpointError: an unknown format or dtype, a missing artifact, or an unusable name.
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"the export's name must be a str, got {type(name).__name__}")
    root = safe_folder_name(name)
    with tempfile.TemporaryDirectory(prefix="lowrank-export-") as tmp:
        folder = export(fmt, Path(tmp) / root, dtype, compressed, adapter, comparison=comparison)
        return zip_bytes(folder, root)


__all__ = [
    "EXPORT_FORMATS",
    "SizeEstimate",
    "available_formats",
    "estimate_size",
    "export",
    "export_zip",
]
