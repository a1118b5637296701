"""The model every page shares: loading it with a clear message, and the sidebar that names it."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import LoadedModel
from lowrank_lab.ui import state
from lowrank_lab.ui.cache import loaded_model


def require_model() -> LoadedModel:
    """Load the session's model (cached), or show the error and stop the page."""
    spec = state.current_spec()
    try:
        with st.spinner(f"Loading {spec.source} (the first load of the built-in model converts it, ~20 s)…"):
            loaded = loaded_model(spec)
    except LowrankLabError as err:
        st.error(str(err))
        st.page_link("app.py", label="Choose another model on the home page")
        st.stop()
    with st.sidebar:
        st.caption(f"Model: **{loaded.title}** · {loaded.n_params / 1e6:.1f}M parameters")
    return loaded
