"""Compression: rank plans turned into factorized models, data-aware, under a parameter budget.

from lowrank_lab.compress import CalibrationSettings, allocate, compress

plan = allocate(loaded, keep=0.8, strategy="auto")           # 20% of linear parameters removed
compressed = compress(loaded, plan, method="whitened")       # works on a copy
"""

from lowrank_lab.compress.allocate import STRATEGIES, Strategy, allocate, whitened_spectra
from lowrank_lab.compress.apply import compress
from lowrank_lab.compress.calibration import CALIBRATION_CACHE, CalibrationSettings

__all__ = [
    "CALIBRATION_CACHE",
    "STRATEGIES",
    "CalibrationSettings",
    "Strategy",
    "allocate",
    "compress",
    "whitened_spectra",
]
