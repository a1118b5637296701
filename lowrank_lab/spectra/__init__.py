"""Singular-value spectra of weight matrices, with metrics and an on-disk cache."""

from lowrank_lab.spectra.cache import SpectrumCache, weight_digest
from lowrank_lab.spectra.engine import (
    LayerSpectrum,
    compute_spectra,
    spectra_records,
    spectrum_of,
    write_spectra,
)
from lowrank_lab.spectra.metrics import ENERGY_LEVELS, SpectrumMetrics, energy_rank, spectrum_metrics
from lowrank_lab.spectra.svd import singular_values

__all__ = [
    "ENERGY_LEVELS",
    "LayerSpectrum",
    "SpectrumCache",
    "SpectrumMetrics",
    "compute_spectra",
    "energy_rank",
    "singular_values",
    "spectra_records",
    "spectrum_metrics",
    "spectrum_of",
    "write_spectra",
    "weight_digest",
]
