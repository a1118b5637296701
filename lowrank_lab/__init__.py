"""lowrank_lab: an interactive lab for low-rank structure in transformer models.

The numeric core (everything here outside ``lowrank_lab.ui``) never imports streamlit, so the
command line, the tests and other programs use it directly::

    from lowrank_lab import load_model, compute_spectra, plan_keep_params, summarize_plan

    loaded = load_model("smollm2-135m")
    spectra = compute_spectra(loaded.model)
    summary = summarize_plan(spectra, plan_keep_params(spectra, 0.5), loaded.n_params)
"""

from lowrank_lab.compress import CalibrationSettings, allocate, compress, whitened_spectra
from lowrank_lab.errors import (
    ArgumentTypeError,
    CheckpointError,
    DataError,
    InvalidRankPlan,
    LowrankLabError,
    ModelLoadError,
    NonFiniteError,
    NoWeightMatricesError,
    OutputError,
    SettingsError,
)
from lowrank_lab.export import save_adapter, save_compressed
from lowrank_lab.finetune import LoraSettings, TrainControl, TrainReport, finetune
from lowrank_lab.lowrank import LowRankLinear
from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.models import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    CompressedModel,
    LoadedModel,
    ModelSpec,
    load_compressed,
    load_model,
)
from lowrank_lab.plan import (
    PlanSummary,
    RankPlan,
    plan_fixed_rank,
    plan_keep_energy,
    plan_keep_params,
    summarize_plan,
)
from lowrank_lab.spectra import LayerSpectrum, SpectrumCache, compute_spectra, singular_values
from lowrank_lab.version import __version__

__all__ = [
    "ArgumentTypeError",
    "BUILTIN_MODELS",
    "CalibrationSettings",
    "DEFAULT_MODEL",
    "CheckpointError",
    "CompressedModel",
    "DataError",
    "InvalidRankPlan",
    "LayerSpectrum",
    "LoadedModel",
    "LoraSettings",
    "LowRankLinear",
    "LowrankLabError",
    "ModelLoadError",
    "ModelSpec",
    "NoWeightMatricesError",
    "NonFiniteError",
    "OutputError",
    "PlanSummary",
    "RankPlan",
    "SettingsError",
    "SpectrumCache",
    "TrainControl",
    "TrainReport",
    "WeightMatrix",
    "__version__",
    "allocate",
    "compress",
    "compute_spectra",
    "finetune",
    "load_compressed",
    "load_model",
    "plan_fixed_rank",
    "plan_keep_energy",
    "plan_keep_params",
    "save_adapter",
    "save_compressed",
    "singular_values",
    "summarize_plan",
    "weight_matrices",
    "whitened_spectra",
]
