"""The cache split: one shared model per spec (resource), spectra and what follows from them as data.

``loaded_model`` returns the same object to every session: it must stay read-only. Pages
that change weights (compression, fine-tuning) work on ``loaded.copy()``.

Spectra and whitened spectra live in :class:`~lowrank_lab.cache.KeyedCache` objects the app
owns (one per server process, through ``st.cache_resource``) rather than in ``st.cache_data``:
Streamlit records every element a cached function draws and replays it on later hits, so a
progress bar drawn from inside a cached function breaks the next page that hits the cache. A
KeyedCache computes outside any Streamlit cache, so the bar is drawn once, live, and never
replayed; it locks per key, so one session's calibration does not hold up another session's
spectra. The core's calibration work gets the app's own cache too (:func:`calibration_cache`).
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.cache import GiB, KeyedCache
from lowrank_lab.compress import CalibrationSettings, whitened_spectra
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import LoadedModel, ModelSpec, load_model
from lowrank_lab.plan import PlanCalculator, TradeoffCurve, tradeoff_curves
from lowrank_lab.spectra import LayerSpectrum, compute_spectra


# Streamlit shows the spinner on a cache miss only, so a rerun pays nothing for it.
@st.cache_resource(show_spinner="Loading the model (the built-in one converts once, about 20 s)…", max_entries=3)
def loaded_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` once per server process; shared read-only by every session."""
    return load_model(spec)


@st.cache_resource(show_spinner=False, max_entries=3)
def param_count(spec: ModelSpec) -> int:
    """``loaded_model(spec).n_params``, counted once (walking the parameters costs milliseconds)."""
    return loaded_model(spec).n_params


@st.cache_resource(show_spinner=False)
def spectra_cache() -> KeyedCache:
    """Spectra of each model spec's shared model (small: a few MiB per model)."""
    return KeyedCache(max_bytes=512 * 2**20, name="spectra")


@st.cache_resource(show_spinner=False)
def whitened_cache() -> KeyedCache:
    """Whitened spectra per (model spec, calibration settings)."""
    return KeyedCache(max_bytes=256 * 2**20, name="whitened spectra")


@st.cache_resource(show_spinner=False)
def calibration_cache() -> KeyedCache:
    """What calibration computes for compression and allocation (statistics, decompositions,
    loss gradients), keyed by model content; every core call from the app passes this one."""
    return KeyedCache(max_bytes=4 * GiB, name="calibration")


def _read_only(spectra: list[LayerSpectrum]) -> list[LayerSpectrum]:
    # Every session gets these very arrays: make an accidental in-place edit fail loudly.
    for sp in spectra:
        sp.s.flags.writeable = False
    return spectra


def model_spectra(spec: ModelSpec, _progress=None) -> list[LayerSpectrum]:
    """Spectra of every weight matrix of the shared model for ``spec``, shared read-only.

    Computed once per server process (and cached on disk by content); ``_progress`` is told
    how a first computation goes.
    """
    compute = lambda: _read_only(compute_spectra(loaded_model(spec).model, progress=_progress))  # noqa: E731
    return spectra_cache().get_or_compute(spec, compute)


def spectra_with_progress(spec: ModelSpec) -> list[LayerSpectrum]:
    """:func:`model_spectra`, drawing a progress bar while a first computation runs."""
    bar = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=f"Singular values: {done}/{total} {message}")

    try:
        spectra = model_spectra(spec, _progress=progress)
    except LowrankLabError as err:  # e.g. a model with no 2-D weight to analyse
        bar.empty()
        st.error(str(err))
        st.stop()
    bar.empty()
    return spectra


@st.cache_resource(show_spinner=False, max_entries=8)
def plan_calculator(spec: ModelSpec) -> PlanCalculator:
    """Summaries of plans for ``spec``'s spectra, with the per-matrix sums done once (read-only)."""
    return PlanCalculator(model_spectra(spec))


@st.cache_data(show_spinner="Sweeping the presets for the trade-off chart…", max_entries=8)
def model_tradeoff(spec: ModelSpec) -> list[TradeoffCurve]:
    """Whole-model trade-off curves of the presets for ``spec`` (once per model, not per rerun)."""
    return tradeoff_curves(model_spectra(spec))


def whitened_with_progress(spec: ModelSpec, calibration: CalibrationSettings) -> list[LayerSpectrum]:
    """Whitened spectra (W·S) of the shared model for ``spec`` on ``calibration``, once per process.

    Raises:
        LowrankLabError: calibration is impossible (no tokenizer, text too short); the page shows it.
    """
    bar = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=f"Calibrating and whitening: {done}/{total} {message}")

    try:
        loaded = loaded_model(spec)
        compute = lambda: _read_only(whitened_spectra(loaded, calibration, progress, calibration_cache()))  # noqa: E731
        return whitened_cache().get_or_compute((spec, calibration.key()), compute)
    finally:
        bar.empty()
