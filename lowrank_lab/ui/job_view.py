"""How every long job looks on a page: one bar with the current step and the time left, and Stop.

:func:`live` is a fragment that redraws itself every second while the job runs (only the
fragment reruns, not the page), and reruns the whole page once the job is done so the page
can show the result. Nothing polls once no job runs, so an idle server stays idle.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lowrank_lab.ui.jobs import Job, eta_text

POLL_SECONDS = 1.0


def progress_line(job: Job) -> str:
    """``step · about N s left · 12 s so far``."""
    event = job.event
    return f"{event.step} · {eta_text(event)} · {job.seconds:,.0f} s so far"


def draw(job: Job, key: str, stop_label: str = "Stop", extra: Callable[[], None] | None = None) -> None:
    """The bar, the Stop button and ``extra`` (e.g. a live chart), drawn once."""
    st.progress(min(max(job.event.fraction, 0.0), 1.0), text=progress_line(job))
    st.button(
        "Stopping…" if job.stop_requested else stop_label,
        key=key,
        on_click=job.stop,
        disabled=job.stop_requested,
        help="Ends the job at its next step.",
    )
    if extra is not None:
        extra()


@st.fragment(run_every=POLL_SECONDS)
def live(job: Job, key: str, stop_label: str = "Stop", extra: Callable[[], None] | None = None) -> None:
    """:func:`draw`, redrawn every second while ``job`` runs; the whole page reruns when it ends."""
    if job.done:
        st.rerun()  # the whole page: it shows the result
    draw(job, key, stop_label, extra)
