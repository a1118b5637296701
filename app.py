"""The app: Home (choose a model, see its summary, where to go next) and one page per step.

``streamlit run app.py`` serves this file; it names the pages for the sidebar and runs the one
chosen. Home is drawn here; each step is its own file under ``pages/``.

The navigation is set before anything heavy is imported: until ``st.navigation`` runs,
Streamlit shows the ``pages/`` folder under the main script's name ("app"), and importing the
core (torch) takes seconds. The sidebar titles come from the file names ("1_Spectra.py" →
"Spectra"); ``lowrank_lab.ui.home.PAGES`` describes each page for the home page's guide.
"""

import re
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="lowrank_lab", layout="wide")


def page_title(path: Path) -> str:
    """``pages/1_Spectra.py`` → ``Spectra`` (Streamlit's own rule for page files)."""
    return re.sub(r"^\d+_", "", path.stem).replace("_", " ")


def home_page() -> None:
    st.title("lowrank_lab")
    st.write(
        "Where does each weight matrix of a transformer have low-rank structure, and what would cutting it "
        "cost? Load a model, look at its spectra, drag ranks and see the savings and the error at once."
    )
    from lowrank_lab.ui import home, state  # heavy (torch, seconds the first time): after the first paint
    from lowrank_lab.ui.cache import param_count
    from lowrank_lab.ui.current_model import require_model

    state.set_model_source(home.choose_model())
    loaded = require_model()
    home.summary(loaded, param_count(state.current_spec()))
    home.page_guide()


STEPS = sorted((Path(__file__).parent / "pages").glob("[0-9]*_*.py"))
HOME = st.Page(home_page, title="Home", default=True)
st.navigation([HOME] + [st.Page(f"pages/{p.name}", title=page_title(p)) for p in STEPS]).run()
