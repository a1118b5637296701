"""Model specs and loading: built-in, tiny, local and hub models, and compressed checkpoints."""

from lowrank_lab.models.compressed import (
    METHODS,
    CompressedModel,
    Method,
    ParamCounts,
    factorized_plan,
    load_compressed,
)
from lowrank_lab.models.load import LoadedModel, load_model
from lowrank_lab.models.spec import BUILTIN_MODELS, DEFAULT_MODEL, TINY_MODELS, BuiltinModel, ModelSpec

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "METHODS",
    "TINY_MODELS",
    "BuiltinModel",
    "CompressedModel",
    "LoadedModel",
    "Method",
    "ModelSpec",
    "ParamCounts",
    "factorized_plan",
    "load_compressed",
    "load_model",
]
