"""Export: the compressed checkpoint, its loader, and every other format a user takes away.

    from lowrank_lab.export import save_compressed, load_compressed

    path = save_compressed(compressed, "out/smollm2-lowrank", dtype="float16", zip=True)
    model = load_compressed("out/smollm2-lowrank")  # same logits as compressed.model

Formats: the compressed checkpoint (:func:`save_compressed`, format in
:mod:`lowrank_lab.export.format`), a dense Hugging Face folder (:func:`save_dense`), a LoRA
adapter in PEFT's format (:func:`save_adapter`), the adapter merged into its base
(:func:`save_merged`), and a rank plan as PEFT ``rank_pattern`` (:func:`rank_pattern`).
"""

from lowrank_lab.export.adapter import (
    merge_adapter,
    merged_compressed,
    rank_pattern,
    save_adapter,
    save_merged,
    save_rank_pattern,
)
from lowrank_lab.export.archive import extract_zip, safe_folder_name, safe_member_name, zip_folder
from lowrank_lab.export.bundle import EXPORT_KINDS, SizeEstimate, available_kinds, estimate_size, export, export_zip
from lowrank_lab.export.checkpoint import save_compressed
from lowrank_lab.export.dense import densify, save_dense
from lowrank_lab.export.format import DTYPES, FORMAT, FORMAT_VERSION, LowrankSection
from lowrank_lab.export.loader import load_compressed

__all__ = [
    "DTYPES",
    "EXPORT_KINDS",
    "FORMAT",
    "FORMAT_VERSION",
    "LowrankSection",
    "SizeEstimate",
    "available_kinds",
    "densify",
    "estimate_size",
    "export",
    "export_zip",
    "extract_zip",
    "load_compressed",
    "merge_adapter",
    "merged_compressed",
    "rank_pattern",
    "safe_folder_name",
    "safe_member_name",
    "save_adapter",
    "save_compressed",
    "save_dense",
    "save_merged",
    "save_rank_pattern",
    "zip_folder",
]
