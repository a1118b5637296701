"""Model specs and loading: built-in, tiny, local and hub models."""

from lowrank_lab.models.load import LoadedModel, check_safetensors, load_model
from lowrank_lab.models.spec import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    DTYPES,
    TINY_MODELS,
    BuiltinModel,
    ModelSpec,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "DTYPES",
    "TINY_MODELS",
    "BuiltinModel",
    "LoadedModel",
    "ModelSpec",
    "check_safetensors",
    "load_model",
]
