"""The Spectra page's whitened spectrum: a matrix's singular values beside those of W·S.

S comes from the layer's input statistics on calibration text (the whitened method's view of
the matrix). It shows once a calibration ran in this session (here, or by compressing on the
Ranks page), and a button runs one on the built-in text.
"""

from __future__ import annotations

import streamlit as st

from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import LoadedModel
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.ui import state
from lowrank_lab.ui.cache import whitened_with_progress
from lowrank_lab.ui.spectra_charts import whitened_figure

BUTTON = "spectra_calibrate"


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
    try:
        whitened = {w.name: w for w in whitened_with_progress(loaded.spec, calibration)}
    except LowrankLabError as err:
        st.session_state.pop(state.CALIBRATION, None)
        st.error(f"Calibration failed: {err}")
        return
    if sp.name not in whitened:
        st.caption(f"{sp.name} is not whitened (only linear layers are); pick a linear layer to compare.")
        return
    st.caption(f"Calibration: {calibration.source}, {calibration.samples} × {calibration.seq_len} tokens.")
    st.plotly_chart(whitened_figure(sp, whitened[sp.name]), key="spectra_whitened")
