"""The app: Home (choose a model, see its summary, where to go next) and one page per step.

``streamlit run app.py`` serves this file; it names the pages for the sidebar and runs the one
chosen. Home is drawn here; each step is its own file under ``pages/``.
"""

import streamlit as st

from lowrank_lab.ui import home, state
from lowrank_lab.ui.cache import param_count
from lowrank_lab.ui.current_model import require_model


def home_page() -> None:
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


HOME = st.Page(home_page, title="Home", default=True)
st.navigation([HOME] + [st.Page(page.path, title=page.title) for page in home.PAGES]).run()
