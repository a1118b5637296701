"""Spectra: where each weight matrix has low-rank structure, from its singular values."""

import streamlit as st

from lowrank_lab.spectra.views import overlay_group
from lowrank_lab.ui import heavy_tail_view, spectra_widgets, state, whitened
from lowrank_lab.ui.cache import spectra_with_progress
from lowrank_lab.ui.current_model import require_model
from lowrank_lab.ui.spectra_charts import spectrum_figure
from lowrank_lab.ui.widgets import matrix_picker

st.set_page_config(page_title="Spectra · lowrank_lab", layout="wide")
st.title("Spectra")
st.caption(
    "Singular values of every weight matrix (W viewed out×in). A spectrum that falls fast has "
    "low-rank structure; values above the Marchenko–Pastur edge are what a random matrix of the "
    "same shape and variance would not have."
)

loaded = require_model()
for note in loaded.notes:
    st.caption(note)
spec = state.current_spec()
spectra = spectra_with_progress(spec)

spectra_widgets.heatmap(spectra)

st.subheader("Spectrum")
sp = matrix_picker(spectra, key=spectra_widgets.MATRIX)
overlay, normalise, fraction = spectra_widgets.view_options()
group = overlay_group(spectra, sp.name, overlay)
st.plotly_chart(spectrum_figure(group, sp.name, normalise, fraction), key="spectra_spectrum")
spectra_widgets.selected_metrics(sp)
heavy_tail_view.section(sp)
whitened.section(loaded, sp)

st.subheader("Every matrix")
spectra_widgets.metrics_table(spectra, spec.source)
