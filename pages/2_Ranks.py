"""Ranks: choose a rank per matrix and see at once what it costs (error) and saves (parameters, bytes)."""

import streamlit as st

from lowrank_lab.plan import error_curve, kind_totals, linear_kinds, plan_point
from lowrank_lab.ui import compress_panel, prediction_view, rank_display, rank_widgets, state
from lowrank_lab.ui.cache import model_tradeoff, param_count, plan_calculator, spectra_with_progress
from lowrank_lab.ui.current_model import require_model
from lowrank_lab.ui.rank_charts import error_rank_figure, tradeoff_figure
from lowrank_lab.ui.widgets import matrix_picker

st.set_page_config(page_title="Ranks · lowrank_lab", layout="wide")
st.title("Ranks")
st.caption(
    "Pick a rank for each weight matrix. Errors and savings come from the cached singular values "
    r"(Eckart–Young: $\|W-W_r\|_F^2=\sum_{i>r}\sigma_i^2$), so every move updates at once, with no new SVD."
)

loaded = require_model()
spec = state.current_spec()
spectra = spectra_with_progress(spec)
curves = model_tradeoff(spec)
controls, plan = rank_widgets.current_controls(spectra)
summary = plan_calculator(spec).summarize(plan, param_count(spec))  # Eckart–Young, no SVD
basis = prediction_view.basis(loaded)  # None until the model is calibrated
prediction = basis.predict(plan) if basis is not None else None  # a lookup per matrix, no SVD

rank_display.totals(summary)
if prediction is not None:
    prediction_view.totals(prediction, basis)
prediction_view.measured_marker(spec.source, plan)

left, right = st.columns([1.2, 2], gap="large")
with left:
    st.subheader("Rank per kind")
    activation = prediction.kind_errors if prediction is not None else None
    rank_widgets.kind_sliders(linear_kinds(spectra), spectra, kind_totals(spectra, summary), activation)
with right:
    st.subheader("Presets")
    rank_widgets.preset_controls(spectra)
    st.subheader("One matrix")
    sp = matrix_picker(spectra, key="ranks_matrix")
    rank_widgets.matrix_override(sp, plan, spectra)
    rank_display.matrix_numbers(summary.row(sp.name))
    whitened = prediction_view.matrix_curve(basis, prediction, sp.name)
    chart = error_rank_figure(error_curve(sp), plan.get(sp.name), sp.name, whitened)
    st.plotly_chart(chart, key="ranks_error_chart")

st.plotly_chart(tradeoff_figure(curves, plan_point(summary)), key="ranks_tradeoff_chart")

st.subheader("Every matrix")
rank_display.matrix_table(summary, prediction_view.matrix_errors(basis, prediction))
st.subheader("Plan file")
rank_widgets.plan_file(plan, spectra)

st.subheader("Compress and evaluate this plan")
st.caption(
    "Factorize a copy of the model (the shared one is untouched) with this plan or an allocator's, "
    "then measure it against the dense model: perplexity, the same prompts generated, speed and memory."
)
compress_panel.form(loaded, plan)
compress_panel.results(spec.source)
