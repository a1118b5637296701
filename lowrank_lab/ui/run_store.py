"""The app's run store: one :class:`RunStore` per database file, shared by every session.

A store that cannot be opened (corrupt, newer, read-only, locked) is not cached, so the next
rerun tries again (opening costs about a millisecond); meanwhile pages say why and go on without
it. The notice is shown once per page run, wherever a page first asks for the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from lowrank_lab.errors import RunStoreError
from lowrank_lab.runs import RunStore, default_path

T = TypeVar("T")
NOT_RECORDED = "Runs are not recorded"


@st.cache_resource(show_spinner=False, max_entries=4)
def _open(path: str) -> RunStore:
    return RunStore(path)  # an exception is not cached: the next rerun tries again


def store() -> tuple[RunStore | None, RunStoreError | None]:
    """The store at ``$LOWRANK_LAB_RUNS`` (or the cache folder's), or why it cannot be used."""
    try:
        return _open(str(default_path())), None
    except RunStoreError as err:
        return None, err


def notice(err: RunStoreError | str, where=st) -> None:
    """Say that the app works without the store, and why."""
    where.warning(f"**{NOT_RECORDED}** — the app works on without its run store: {err}")


def attempt(fn: Callable[[RunStore], T], what: str, where=st) -> T | None:
    """Run ``fn(store)``; on a store problem show a warning naming ``what`` was not done, and return None."""
    s, err = store()
    if s is None:
        notice(err, where)
        return None
    try:
        return fn(s)
    except RunStoreError as err:
        where.warning(f"{what} failed, the app goes on: {err}")
        return None


def writable_store() -> RunStore | None:
    """The store if it can record, else None (silently: the page that records says why)."""
    s, _ = store()
    return None if s is None or s.read_only else s
