"""What the page tests share beyond AppTest: a rerun carrying what a browser still reports."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def late_report(at: AppTest, stale: list) -> AppTest:
    """Rerun as the browser does when a move is made before the last run arrived: with every
    widget's value, plus ``stale`` (widget states read before that run: what the browser still held).

    AppTest reports only the widgets it drew last, so the states are put together here the way
    the browser's are (``_tree`` and ``_run`` are AppTest's own, in the pinned Streamlit).
    """
    states = at._tree.get_widget_states()
    states.widgets.extend(stale)
    return at._run(states)
