"""Shared fixtures: one cache folder for the whole run, tiny models, and the built-in model."""

from __future__ import annotations

import os
import shutil
import tempfile
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
# Runs recorded by the tests (CLI, pages) go to a fresh store per test process, not the shared cache.
_RUNS_DIR = None
if "LOWRANK_LAB_RUNS" not in os.environ:
    _RUNS_DIR = tempfile.mkdtemp(prefix="lowrank-runs-")
    os.environ["LOWRANK_LAB_RUNS"] = str(Path(_RUNS_DIR) / "runs.sqlite3")


def pytest_sessionfinish(session, exitstatus):
    if _RUNS_DIR is not None:
        shutil.rmtree(_RUNS_DIR, ignore_errors=True)


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
