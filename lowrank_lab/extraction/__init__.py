"""LoRA extraction: a PEFT adapter from the difference of two models, ranks from the ΔW spectra."""

from lowrank_lab.extraction.extract import ExtractedMatrix, ExtractionResult, build_adapter, extract_lora
from lowrank_lab.extraction.factors import top_factors
from lowrank_lab.extraction.ranks import (
    MODES,
    ExtractionEstimate,
    ExtractionSettings,
    estimate_plan,
    extraction_plan,
    plan_budget,
)

__all__ = [
    "MODES",
    "ExtractedMatrix",
    "ExtractionEstimate",
    "ExtractionResult",
    "ExtractionSettings",
    "build_adapter",
    "estimate_plan",
    "extract_lora",
    "extraction_plan",
    "plan_budget",
    "top_factors",
]
