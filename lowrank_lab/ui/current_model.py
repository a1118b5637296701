"""The model every page shares: loading it with a clear message, and the sidebar that names it."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import LoadedModel
from lowrank_lab.ui import state
from lowrank_lab.ui.cache import loaded_model, param_count


def require_model() -> LoadedModel:
    """Load the session's model (cached), or show the error and stop the page."""
    spec = state.current_spec()
    try:
        loaded = loaded_model(spec)  # shows a spinner while a first load runs
    except LowrankLabError as err:
        st.error(str(err))
        st.info("Choose another model on the Home page (first in the sidebar).")
        st.stop()
    with st.sidebar:
        st.caption(f"Model: **{loaded.title}** · {param_count(spec) / 1e6:.1f}M parameters")
    return loaded
