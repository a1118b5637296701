"""Compression: rank plans turned into factorized models, data-aware, under a parameter budget.

from lowrank_lab.compress import CalibrationSettings, allocate, compress

plan = allocate(loaded, keep=0.8, strategy="auto")           # 20% of linear parameters removed
compressed = compress(loaded, plan, method="whitened")       # works on a copy
"""

from lowrank_lab.compress.allocate import STRATEGIES, Strategy, allocate, allocate_explained, whitened_spectra
from lowrank_lab.compress.apply import compress
from lowrank_lab.compress.calibration import CALIBRATION_CACHE, CalibrationSettings
from lowrank_lab.compress.results import AllocationReport, Candidate

__all__ = [
    "CALIBRATION_CACHE",
    "AllocationReport",
    "Candidate",
    "STRATEGIES",
    "CalibrationSettings",
    "Strategy",
    "allocate",
    "allocate_explained",
    "compress",
    "whitened_spectra",
]
