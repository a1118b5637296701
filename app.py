"""Home: choose a model, see its summary, and where to go next."""

import streamlit as st

from lowrank_lab.ui import home, state
from lowrank_lab.ui.cache import param_count
from lowrank_lab.ui.sidebar import require_model

st.set_page_config(page_title="lowrank_lab", layout="wide")
st.title("lowrank_lab")
st.write(
    "Where does each weight matrix of a transformer have low-rank structure, and what would cutting it "
    "cost? Load a model, look at its spectra, drag ranks and see the savings and the error at once."
)

state.set_model_source(home.choose_model())
loaded = require_model()
home.summary(loaded, param_count(state.current_spec()))
home.page_guide()
