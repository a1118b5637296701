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
from lowrank_lab.progress import ProgressEvent, Stages
from lowrank_lab.spectra import LayerSpectrum, compute_spectra
from lowrank_lab.ui.jobs import Job, eta_text


# Streamlit shows the spinner on a cache miss only, so a rerun pays nothing for it.
@st.cache_resource(
    show_spinner="Loading the model… the built-in one converts from GGUF on its first load (20 s to a minute on "
    "two cores); later loads take seconds.",
    max_entries=3,
)
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


@st.cache_resource(show_spinner=False)
def dense_figures_cache() -> KeyedCache:
    """The dense model's perplexity, generations and peak memory per (model content, evaluation
    settings): measured on the first compression of a model, reused by every later one."""
    return KeyedCache(name="dense model figures")


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

    def draw(event: ProgressEvent) -> None:  # the look of every job: the step, one bar, the time left
        bar.progress(event.fraction, text=f"{event.step} · {eta_text(event)}")

    stages = Stages(draw, {"singular values": 1.0})
    step = stages.stage("singular values")

    def progress(done: int, total: int, message: str) -> None:
        step(done, total, f"singular values: {done}/{total} {message}")

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


def whitened_key(spec: ModelSpec, calibration: CalibrationSettings) -> tuple:
    return (spec, calibration.key())


def cached_whitened(spec: ModelSpec, calibration: CalibrationSettings) -> list[LayerSpectrum] | None:
    """The whitened spectra of ``spec`` on ``calibration`` if this process has them, else None."""
    return whitened_cache().get(whitened_key(spec, calibration))


def whitened_job(spec: ModelSpec, calibration: CalibrationSettings) -> Job[list[LayerSpectrum]]:
    """A background job computing the whitened spectra (W·S) of the shared model for ``spec`` on
    ``calibration``, kept once per process; its error (no tokenizer, text too short) ends the job."""
    loaded = loaded_model(spec)
    spectra, stats = whitened_cache(), calibration_cache()  # resolved in the page's thread

    def work(job: Job) -> list[LayerSpectrum]:
        progress = job.stage("calibrate")
        compute = lambda: _read_only(whitened_spectra(loaded, calibration, progress, stats))  # noqa: E731
        return spectra.get_or_compute(whitened_key(spec, calibration), compute)

    return Job("Calibrating", {"calibrate": 1.0}, work)
