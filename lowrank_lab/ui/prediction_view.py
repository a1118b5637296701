"""The Ranks page's predictions: activation-aware error and predicted perplexity, live on every move.

The prediction basis (whitened spectra, loss costs, dense perplexity) is built once per (model,
calibration) and shared by every session; a slider move only reads it (a lookup per matrix).
It exists once the session calibrated the model (the Spectra page's Calibrate button, any
compression, or the button here), or once any session built it for this model. Building it is a
background job like every long one (the step, one bar, Stop), and waits while this session's
compression runs (that compression calibrates the same statistics). The fit that
scales raw predictions comes from the run store's measured runs of the model, recomputed only
when their number changes.
"""

from __future__ import annotations

import math

import streamlit as st

from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import LoadedModel, ModelSpec
from lowrank_lab.prediction import LossFit, Prediction, PredictionBasis, prediction_basis
from lowrank_lab.runs.frontier import fit_from_runs
from lowrank_lab.runs.records import RunRow
from lowrank_lab.ui import compress_panel, job_view, run_store, state
from lowrank_lab.ui.cache import calibration_cache, loaded_model
from lowrank_lab.ui.jobs import Job

BUTTON = "ranks_calibrate"
JOB = "ranks_prediction_job"  # session key: (basis key, Job) of the basis being built
ACT_ERROR = "Activation-aware error"
PREDICTED_PPL = "Predicted perplexity (whitened)"
PREDICTED_LOSS = "Predicted loss increase"


@st.cache_resource(show_spinner=False)
def basis_cache() -> KeyedCache:
    """Prediction bases per (model spec, calibration): small arrays, a few MiB per model."""
    return KeyedCache(max_bytes=256 * 2**20, name="prediction bases")


@st.cache_resource(show_spinner=False)
def _latest() -> dict:
    """Model spec → the key of the basis last built for it (so any session can show it)."""
    return {}


@st.cache_resource(show_spinner=False)
def _fits() -> KeyedCache:
    return KeyedCache(max_bytes=2**20, name="loss fits")


def cached_basis(spec: ModelSpec) -> PredictionBasis | None:
    """The basis some session last built for ``spec``, if still cached; never computes one."""
    key = _latest().get(spec)
    if key is None or key not in basis_cache():
        return None

    def gone() -> PredictionBasis:  # evicted between the check and the read
        raise KeyError(key)

    try:
        return basis_cache().get_or_compute(key, gone)
    except KeyError:
        return None


def _basis_job(spec: ModelSpec, calibration: CalibrationSettings, key: tuple) -> Job[PredictionBasis]:
    loaded, stats, bases = loaded_model(spec), calibration_cache(), basis_cache()  # in the page's thread

    def work(job: Job) -> PredictionBasis:
        progress = job.stage("predict")
        compute = lambda: prediction_basis(loaded, calibration, progress=progress, cache=stats)  # noqa: E731
        return bases.get_or_compute(key, compute)

    return Job("Calibrating for predictions", {"predict": 1.0}, work)


def _compressing() -> bool:
    job = st.session_state.get(compress_panel.JOB)
    return isinstance(job, Job) and not job.done


def _build(spec: ModelSpec, calibration: CalibrationSettings) -> PredictionBasis | None:
    """The basis for ``calibration``: cached, or built by a background job (None while it runs).

    Raises:
        LowrankLabError: the job failed (its message).
    """
    key = (spec, calibration.key())
    found = basis_cache().get(key)
    if found is None:
        held = st.session_state.get(JOB)
        if held is None or held[0] != key:
            if _compressing():
                st.caption("Predictions appear once the compression below has finished.")
                return None
            held = st.session_state[JOB] = (key, _basis_job(spec, calibration, key).start())
        job: Job = held[1]
        if not job.done:
            job_view.live(job, key="ranks_predict_stop")
            return None
        del st.session_state[JOB]
        if job.cancelled:
            st.session_state.pop(state.CALIBRATION, None)
            st.info("Calibration for predictions stopped; calibrate again whenever you like.")
            return None
        if job.result is None:
            raise LowrankLabError(job.error)
        found = job.result
    _latest()[spec] = key
    return found


def fit_for(model: str) -> LossFit:
    """The loss fit over the store's measured runs of ``model`` (the prior without a store)."""
    store, _ = run_store.store()
    if store is None:
        return LossFit()
    try:
        signature = store.signature(model)
        key = (str(store.path), model, signature)
        return _fits().get_or_compute(key, lambda: fit_from_runs(store.runs(model, "compression")))
    except LowrankLabError:
        return LossFit()


def basis(loaded: LoadedModel) -> PredictionBasis | None:
    """The basis for the page's model with the store's fit, or None (with a button to calibrate)."""
    spec = loaded.spec
    saved = st.session_state.get(state.CALIBRATION)
    found = None
    if isinstance(saved, state.Calibration) and saved.source == spec.source:
        try:
            found = _build(spec, saved.settings)
        except LowrankLabError as err:
            st.session_state.pop(state.CALIBRATION, None)
            st.error(f"Calibration failed, so there is no prediction: {err}")
            return None
        if found is None:  # being built (drawn live), or waiting for the compression
            return None
    else:
        found = cached_basis(spec)
    if found is None:
        _offer_calibration(loaded)
        return None
    return found.with_fit(fit_for(spec.source))


def _offer_calibration(loaded: LoadedModel) -> None:
    default = CalibrationSettings()
    st.info(
        "**Predicted loss** appears here once the model is calibrated: the activation-aware error "
        "(whitened singular values: what truncation does to each layer's outputs on real text) and a "
        "predicted perplexity from loss-gradient–weighted costs, live on every move. Calibrate here, with "
        "the Spectra page's button, or by compressing below."
    )
    cost = "one forward and backward pass" if loaded.task == "causal-lm" else "one forward pass"
    if st.button(f"Calibrate on the built-in text ({default.samples} × {default.seq_len} tokens; {cost})", key=BUTTON):
        st.session_state[state.CALIBRATION] = state.Calibration(loaded.spec.source, default)
        st.rerun()


def _band(low: float, high: float, digits: int = 2) -> str:
    return f"{low:,.{digits}f}–{high:,.{digits}f}"


def totals(prediction: Prediction, basis: PredictionBasis) -> None:
    """The plan's predicted figures beside the plain-error totals."""
    c = st.columns(4)
    c[0].metric(
        ACT_ERROR,
        f"{prediction.activation_error:.4f}",
        help="‖(W−Wᵣ)X‖/‖WX‖: the relative output error of all linear layers together on the calibration tokens, "
        r"$\sqrt{\sum \text{dropped } \tilde\sigma_i^2 / \sum \tilde\sigma_i^2}$ over the whitened singular values "
        "of W·S (its square is the fraction of output energy dropped). Exact for the whitened method.",
    )
    if prediction.perplexity is None:
        c[1].metric(PREDICTED_PPL, "—", help="An encoder has no next-token loss to predict.")
    else:
        c[1].metric(
            PREDICTED_PPL,
            f"{prediction.perplexity:,.2f}",
            delta=f"×{prediction.perplexity / basis.dense_perplexity:.2f} of dense {basis.dense_perplexity:.2f}",
            delta_color="off",
            help="Dense perplexity on the built-in evaluation text × exp(predicted loss increase), for the "
            f"whitened method. Range: {_band(prediction.perplexity_low, prediction.perplexity_high)}.",
        )
        c[2].metric(
            PREDICTED_LOSS,
            f"{prediction.loss_increase:.3f} nats",
            delta=f"range {_band(prediction.loss_low, prediction.loss_high, 3)}",
            delta_color="off",
            help="Σ over dropped whitened components of σ̃ᵢ²·mean(uᵢᵀg)² (loss-gradient weighted), scaled to "
            "nats per token; " + basis.fit.describe() + ".",
        )
        c[3].metric(
            "Uncertainty",
            f"×/÷ {math.exp(basis.fit.log_sd):.2f}",
            help="One standard deviation of measured over predicted loss increase: "
            + basis.fit.describe()
            + ". Every whitened compression you measure makes it tighter.",
        )
    calibration = basis.calibration
    st.caption(
        f"Predicted from calibration on {calibration.get('text', 'calibration text')} "
        f"({calibration.get('samples')} × {calibration.get('seq_len')} tokens); {basis.fit.describe()}."
    )


def measured_marker(model: str, plan) -> None:
    """Say when this exact plan was already compressed and measured (runs of the store)."""
    store, _ = run_store.store()
    if store is None or not len(plan):
        return
    try:
        rows = store.runs_with_plan(model, plan)
    except LowrankLabError:
        return
    if rows:
        st.success(f"**Already measured**: {_describe_runs(rows)}. See the **Runs** page.")


def _describe_runs(rows: list[RunRow]) -> str:
    parts = []
    for r in rows[:3]:
        ppl = f"perplexity {r.perplexity:.2f}" if r.perplexity is not None else "not measured"
        parts.append(f"run #{r.id} ({r.method}, {r.allocation}): {ppl}")
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return "; ".join(parts) + more


def matrix_curve(basis: PredictionBasis | None, prediction: Prediction | None, name: str):
    """The selected matrix's activation-aware error at every rank (None without a basis or for an embedding)."""
    if basis is None or name not in basis.index:
        return None
    error = float(prediction.matrix_errors[basis.index[name]]) if prediction is not None else None
    if error is not None:
        st.caption(
            f"Activation-aware error of this matrix under the plan: **{error:.4f}** (whitened, on calibration text)."
        )
    return basis.error_curve(name)


def matrix_errors(basis: PredictionBasis | None, prediction: Prediction | None) -> dict[str, float] | None:
    """Each matrix's activation-aware error under the plan, by name (None without a basis)."""
    if basis is None or prediction is None:
        return None
    return dict(zip(basis.names, prediction.matrix_errors.tolist()))
