"""Session-state keys, in one place, the typed values every page shares, and their accessors."""

from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

from lowrank_lab.comparison import Comparison
from lowrank_lab.compress import AllocationReport, CalibrationSettings
from lowrank_lab.compress.distill import DistillReport
from lowrank_lab.compress.results import StageReport
from lowrank_lab.models import DEFAULT_MODEL, CompressedModel, ModelSpec

# The environment can choose the model the app opens with (the tests use a tiny one).
DEFAULT_MODEL_ENV = "LOWRANK_LAB_MODEL"

MODEL_SOURCE = "model_source"  # str: what the home page's picker chose
PLAN = "rank_plan"  # RankPlan: the plan the Ranks page built, for the model in MODEL_SOURCE (the one copy)
COMPRESSED = "compressed"  # CompressionRun: the last finished "Compress and evaluate"
ADAPTER = "adapter"  # TrainedAdapter: the LoRA fine-tune's result, for the Export page
CALIBRATION = "calibration"  # Calibration: the last calibration this session ran
SELECTED_MATRIX = "selected_matrix"  # str: the matrix the Spectra and Ranks pages focus on


@dataclass(frozen=True, eq=False)
class CompressionRun:
    """A finished "Compress and evaluate", for the Ranks, LoRA and Export pages.

    Attributes:
        compressed: the compressed model (a copy; the shared model is untouched).
        comparison: what was measured against the dense model, or None when not measured.
        ranks_from: where the ranks came from: ``plan`` (the sliders) or an allocation strategy.
        allocation: the allocation's candidates and choice (None for the sliders' plan).
        keep: the budget asked for (fraction of linear-layer parameters kept), None for the plan.
        notes: warnings about how it was made (e.g. few calibration tokens), shown with the result.
        stages: perplexity after each stage of the compression (the gap waterfall), when measured.
        distillation: what the end-to-end distillation did (its KL per step), when it ran.
    """

    compressed: CompressedModel
    comparison: Comparison | None
    ranks_from: str
    allocation: AllocationReport | None = None
    keep: float | None = None
    notes: tuple[str, ...] = ()
    stages: StageReport | None = None
    distillation: DistillReport | None = None


@dataclass(frozen=True)
class Calibration:
    """A calibration this session ran: on which model, with which settings."""

    source: str
    settings: CalibrationSettings


def default_source() -> str:
    """The model the app opens with: ``$LOWRANK_LAB_MODEL`` or the built-in default."""
    return os.environ.get(DEFAULT_MODEL_ENV, DEFAULT_MODEL)


def current_spec() -> ModelSpec:
    """The model every page works on (the home page sets it; the default until then)."""
    if MODEL_SOURCE not in st.session_state:
        st.session_state[MODEL_SOURCE] = default_source()
    return ModelSpec(st.session_state[MODEL_SOURCE])


def set_model_source(source: str) -> None:
    """Switch the model. The plan and the selected matrix name the old model's modules, so they
    go; finished work (the compressed model, the adapter) names its own source and stays
    downloadable on the Export page."""
    if st.session_state.get(MODEL_SOURCE) != source:
        st.session_state[MODEL_SOURCE] = source
        for key in (PLAN, SELECTED_MATRIX):
            st.session_state.pop(key, None)


def selected_matrix(names: list[str], default: str | None = None) -> str:
    """The matrix the pages focus on, if it is one of ``names``; else ``default`` or the first."""
    chosen = st.session_state.get(SELECTED_MATRIX)
    if chosen in names:
        return chosen
    return default if default in names else names[0]


def select_matrix(name: str) -> None:
    st.session_state[SELECTED_MATRIX] = name
