"""Widgets more than one page uses."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.ui import state


def _remember(key: str) -> None:
    state.select_matrix(st.session_state[key])


def matrix_picker(spectra: list[LayerSpectrum], key: str, label: str = "Matrix") -> LayerSpectrum:
    """A selectbox of every analysed matrix, sharing its choice across pages.

    The first linear matrix is chosen until someone picks one (here, on another page, or by
    clicking a heatmap cell).
    """
    names = [sp.name for sp in spectra]
    first_linear = next((sp.name for sp in spectra if not sp.is_embedding), names[0])
    st.session_state[key] = state.selected_matrix(names, default=first_linear)
    shapes = {sp.name: sp.shape for sp in spectra}
    name = st.selectbox(
        label,
        names,
        key=key,
        on_change=_remember,
        args=(key,),
        format_func=lambda n: f"{n}  ({shapes[n][0]}×{shapes[n][1]})",
    )
    return spectra[names.index(name)]


def kept(key: str, default: object) -> None:
    """Give the widget ``key`` its value from the last time it was shown (else ``default``).

    Streamlit forgets a widget's value in a run that does not draw it (another page, a step
    that hides it), so the value is copied to a shadow key on every run and put back before
    the widget is drawn again. Call it just before the widget and create the widget *without*
    a value of its own, so what it shows is what the next action will use.
    """
    shadow = f"_kept_{key}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(shadow, default)
    st.session_state[shadow] = st.session_state[key]
