"""Session-state keys, in one place, and typed accessors for the values every page shares."""

from __future__ import annotations

import os

import streamlit as st

from lowrank_lab.models import DEFAULT_MODEL, ModelSpec

# The environment can choose the model the app opens with (the tests use a tiny one).
DEFAULT_MODEL_ENV = "LOWRANK_LAB_MODEL"

MODEL_SOURCE = "model_source"  # str: what the home page's picker chose
PLAN = "rank_plan"  # RankPlan: the plan the Ranks page built, for the model in MODEL_SOURCE
COMPRESSED = "compressed"  # the compressed model + report from "Compress and evaluate"
ADAPTER = "adapter"  # the LoRA fine-tune's result, for the Export page
CALIBRATION = "calibration"  # (model source, CalibrationSettings): the last calibration this session ran
SELECTED_MATRIX = "selected_matrix"  # str: the matrix the Spectra and Ranks pages focus on


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
