"""Export: writing the compressed checkpoint and every other format a user takes away.

    from lowrank_lab.export import save_compressed

    path = save_compressed(compressed, "out/smollm2-lowrank", dtype="float16", zip=True)

Formats: the compressed checkpoint (:func:`save_compressed`, format in
:mod:`lowrank_lab.checkpoint.format`; :func:`lowrank_lab.load_compressed` opens it), a dense
Hugging Face folder (:func:`save_dense`), a LoRA adapter in PEFT's format (:func:`save_adapter`),
the adapter merged into its base (:func:`save_merged`), and a rank plan as PEFT
``rank_pattern`` (:func:`rank_pattern`). This package only writes.
"""

from lowrank_lab.export.adapter import (
    merge_adapter,
    merged_compressed,
    rank_pattern,
    save_adapter,
    save_merged,
    save_rank_pattern,
)
from lowrank_lab.export.archive import safe_folder_name, zip_folder
from lowrank_lab.export.bundle import EXPORT_FORMATS, SizeEstimate, available_formats, estimate_size, export, export_zip
from lowrank_lab.export.compressed import save_compressed
from lowrank_lab.export.dense import densify, save_dense

__all__ = [
    "EXPORT_FORMATS",
    "SizeEstimate",
    "available_formats",
    "densify",
    "estimate_size",
    "export",
    "export_zip",
    "merge_adapter",
    "merged_compressed",
    "rank_pattern",
    "safe_folder_name",
    "save_adapter",
    "save_compressed",
    "save_dense",
    "save_merged",
    "save_rank_pattern",
    "zip_folder",
]
