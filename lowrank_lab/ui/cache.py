"""The cache split: one shared model per spec (resource), spectra and what follows from them as data.

``loaded_model`` returns the same object to every session: it must stay read-only. Pages
that change weights (compression, fine-tuning) work on ``loaded.copy()``.

Spectra are memoised by hand rather than with ``st.cache_data``: Streamlit records every
element a cached function draws and replays it on later hits, so a progress bar drawn from
inside a cached function breaks the next page that hits the cache. The memo computes outside
any Streamlit cache, so the bar is drawn once, live, and never replayed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import streamlit as st

from lowrank_lab.compress import whitened_spectra
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


class _Memo:
    """A small thread-safe LRU map shared by every session (one per server process)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object]):
        with self.lock:  # one computation at a time: two sessions asking at once share the result
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            value = self.items[key] = compute()
            while len(self.items) > self.max_entries:
                self.items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


@st.cache_resource(show_spinner=False)
def _spectra_memo() -> _Memo:
    return _Memo(max_entries=8)


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
    return _spectra_memo().get(spec, lambda: _read_only(compute_spectra(loaded_model(spec).model, progress=_progress)))


model_spectra.clear = lambda: _spectra_memo().clear()


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


@st.cache_resource(show_spinner=False)
def _whitened_memo() -> _Memo:
    return _Memo(max_entries=4)


def whitened_with_progress(spec: ModelSpec, calibration) -> list[LayerSpectrum]:
    """Whitened spectra (W·S) of the shared model for ``spec`` on ``calibration``, once per process.

    Raises:
        LowrankLabError: calibration is impossible (no tokenizer, text too short); the page shows it.
    """
    bar = st.empty()

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=f"Calibrating and whitening: {done}/{total} {message}")

    try:
        compute = lambda: _read_only(whitened_spectra(loaded_model(spec), calibration, progress=progress))  # noqa: E731
        return _whitened_memo().get((spec, calibration), compute)
    finally:
        bar.empty()
