"""Shared fixtures: one cache folder for the whole run, tiny models, and the built-in model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Converted built-in models and the tiny tokenizer are cached across test runs in the repo's
# ignored .cache/ folder, so only the first run pays for the GGUF conversion.
os.environ.setdefault("LOWRANK_LAB_CACHE", str(ROOT / ".cache" / "tests"))
# Nothing here may reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama():
    from lowrank_lab import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from lowrank_lab import load_model

    return load_model("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bert():
    from lowrank_lab import load_model

    return load_model("tiny-bert")


@pytest.fixture(scope="session")
def smollm2():
    """The built-in default model; only for tests about it."""
    from lowrank_lab import load_model

    return load_model("smollm2-135m")
