"""Widgets more than one page uses."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.ui import state


def seed(key: str, value: object) -> None:
    """Give the widget ``key`` ``value`` before it is drawn, writing only a change.

    A value written to a widget's key is sent to the browser as one to impose, on every run it
    is written; writing only what differs leaves the browser alone while nothing changed here.
    """
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value


SUPERSEDED_KEPT = 16  # the last keys a widget had, with the value each held when it was replaced


def _revision(base: str) -> str:
    return f"_revision_{base}"


def _superseded(base: str) -> str:
    return f"_superseded_{base}"  # dict: a key the widget had → the value it held when replaced


def current_key(base: str, session=None) -> str:
    """The key the widget ``base`` has now (see :func:`imposed_key`; ``session``: an AppTest's state)."""
    session = st.session_state if session is None else session
    revision = session[_revision(base)] if _revision(base) in session else 0
    return base if revision == 0 else f"{base}@{revision}"


def imposed_key(base: str, value: object) -> str:
    """The key to draw the widget ``base`` under, showing ``value``: the session's own state.

    For a widget whose value the page sets from elsewhere (a rank slider that a preset or
    another slider moves). The browser reports every widget's value with every move, and when
    the next move is made before the page's run arrives (keys pressed quickly on a busy
    machine) it reports this widget's value from before the page changed it, even under a key
    the page no longer draws. Streamlit takes that for a move of the widget and calls its
    callback, which would undo the change. So a value imposed here that differs from the
    widget's own gives the widget a new key (the old key and its value are kept), and its
    callback acts only on :func:`moved` reports. A move made in the widget keeps its key (and
    the keyboard's focus).
    """
    key = current_key(base)
    if key in st.session_state and st.session_state[key] != value:
        superseded = dict(st.session_state.get(_superseded(base), {}))
        superseded[key] = st.session_state[key]
        st.session_state[_superseded(base)] = dict(list(superseded.items())[-SUPERSEDED_KEPT:])
        st.session_state[_revision(base)] = st.session_state.get(_revision(base), 0) + 1
        key = current_key(base)
    seed(key, value)
    return key


def moved(base: str, key: str) -> bool:
    """Whether the callback of the widget ``key`` (drawn under :func:`imposed_key` ``base``) is for a move.

    True for the key the widget has now, and for an older key whose value differs from the one
    it held when it was replaced (a move made on the old widget before the page's run arrived);
    False for an older key still reporting its old value, the late report to ignore.
    """
    if key == current_key(base):
        return True
    superseded = st.session_state.get(_superseded(base), {})
    return key in superseded and key in st.session_state and st.session_state[key] != superseded[key]


def _remember(base: str, key: str) -> None:
    if moved(base, key):  # not a late report from before the page changed the choice
        state.select_matrix(st.session_state[key])


def matrix_picker(spectra: list[LayerSpectrum], key: str, label: str = "Matrix") -> LayerSpectrum:
    """A selectbox of every analysed matrix, sharing its choice across pages.

    The first linear matrix is chosen until someone picks one (here, on another page, or by
    clicking a heatmap cell). ``key`` is the base of the widget's key: :func:`current_key`
    gives the one it has now (a choice made elsewhere gives it a new one, see :func:`imposed_key`).
    """
    names = [sp.name for sp in spectra]
    first_linear = next((sp.name for sp in spectra if not sp.is_embedding), names[0])
    widget_key = imposed_key(key, state.selected_matrix(names, default=first_linear))
    shapes = {sp.name: sp.shape for sp in spectra}
    name = st.selectbox(
        label,
        names,
        key=widget_key,
        on_change=_remember,
        args=(key, widget_key),
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
