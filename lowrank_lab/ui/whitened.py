"""The Spectra page's whitened spectrum: a matrix's singular values beside those of W·S.

S comes from the layer's input statistics on calibration text (the whitened method's view of
the matrix). It shows once a calibration ran in this session (here, or by compressing on the
Ranks page), and a button runs one on the built-in text, as a background job (the step, one
bar, Stop) like every long job of the app.
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.models import LoadedModel
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.ui import job_view, state
from lowrank_lab.ui.cache import cached_whitened, whitened_job, whitened_key
from lowrank_lab.ui.jobs import Job
from lowrank_lab.ui.spectra_charts import whitened_figure

BUTTON = "spectra_calibrate"
JOB = "spectra_calibration_job"  # session key: (key, Job) of the calibration under way


def _whitened(loaded: LoadedModel, calibration: CalibrationSettings) -> list[LayerSpectrum] | None:
    """The whitened spectra, or None while a job computes them (drawn live) or after it failed."""
    spectra = cached_whitened(loaded.spec, calibration)
    if spectra is not None:
        return spectra
    key = whitened_key(loaded.spec, calibration)
    held = st.session_state.get(JOB)
    if held is None or held[0] != key:
        held = st.session_state[JOB] = (key, whitened_job(loaded.spec, calibration).start())
    job: Job = held[1]
    if not job.done:
        job_view.live(job, key="spectra_calibrate_stop")
        return None
    del st.session_state[JOB]
    if job.result is None:  # stopped or failed: back to the button
        st.session_state.pop(state.CALIBRATION, None)
        if job.cancelled:
            st.info("Calibration stopped.")
        else:
            st.error(f"Calibration failed: {job.error}")
    return job.result


def section(loaded: LoadedModel, sp: LayerSpectrum) -> None:
    """Draw the plain-vs-whitened chart for ``sp``, or offer to calibrate."""
    st.subheader("Whitened spectrum")
    saved = st.session_state.get(state.CALIBRATION)
    if not isinstance(saved, state.Calibration) or saved.source != loaded.spec.source:
        default = CalibrationSettings()
        st.caption(
            "The whitened spectrum is that of W·S, where SSᵀ = XᵀX collects the layer's inputs on "
            "calibration text: truncating it costs exactly the output error on that text."
        )
        if not st.button(f"Calibrate on the built-in text ({default.samples} × {default.seq_len} tokens)", key=BUTTON):
            return
        saved = state.Calibration(loaded.spec.source, default)
        st.session_state[state.CALIBRATION] = saved
    calibration = saved.settings
    whitened = _whitened(loaded, calibration)
    if whitened is None:
        return
    by_name = {w.name: w for w in whitened}
    if sp.name not in by_name:
        st.caption(f"{sp.name} is not whitened (only linear layers are); pick a linear layer to compare.")
        return
    st.caption(f"Calibration: {calibration.source}, {calibration.samples} × {calibration.seq_len} tokens.")
    st.plotly_chart(whitened_figure(sp, by_name[sp.name]), key="spectra_whitened")
