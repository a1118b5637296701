"""The cache split: one shared model per spec (resource), spectra as data.

``loaded_model`` returns the same object to every session: it must stay read-only. Pages
that change weights (compression, fine-tuning) work on ``loaded.copy()``.
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.models import LoadedModel, ModelSpec, load_model
from lowrank_lab.spectra import LayerSpectrum, compute_spectra


@st.cache_resource(show_spinner=False, max_entries=3)
def loaded_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` once per server process; shared read-only by every session."""
    return load_model(spec)


@st.cache_data(show_spinner=False, max_entries=8)
def model_spectra(spec: ModelSpec, _progress=None) -> list[LayerSpectrum]:
    """Spectra of every weight matrix of the shared model for ``spec`` (also cached on disk)."""
    return compute_spectra(loaded_model(spec).model, progress=_progress)


def spectra_with_progress(spec: ModelSpec) -> list[LayerSpectrum]:
    """:func:`model_spectra`, drawing a progress bar while a first computation runs."""
    bar = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=f"Singular values: {done}/{total} {message}")

    spectra = model_spectra(spec, _progress=progress)
    bar.empty()
    return spectra
