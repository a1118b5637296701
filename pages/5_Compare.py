"""Compare: what a second model changed, matrix by matrix, how low-rank that change is, and a LoRA extracted from it."""

import streamlit as st

from lowrank_lab.ui import compare_inputs, compare_view, extract_panel
from lowrank_lab.ui.current_model import require_model

st.set_page_config(page_title="Compare · lowrank_lab", layout="wide")
st.title("Compare")
st.caption(
    "Take a second model with the same matrices (a fine-tune, a merge, a compression of this one) and look at "
    "each change ΔW = W₂ − W₁: its spectrum, its rank, its size. A LoRA fine-tune of rank r changes every matrix "
    "it adapted by a rank-r ΔW. Then extract that change as a LoRA adapter."
)

loaded = require_model()
base = compare_inputs.base_source(loaded)
second = compare_inputs.choose_second(loaded)
delta = compare_view.run(base, second)
if delta is None:
    st.stop()

compare_view.summary(delta)
compare_view.heatmap(delta)
st.subheader("One matrix")
d = compare_view.choose_matrix(delta)
compare_view.matrix(delta, d, base, second.source())
extract_panel.section(delta, base, second, d)
st.subheader("Every matrix")
compare_view.table(delta)
