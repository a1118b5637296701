"""Runs: every compression, fine-tune and export recorded; reopen, compare, delete; the measured frontier."""

import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.ui import run_store, runs_view

st.set_page_config(page_title="Runs · lowrank_lab", layout="wide")
st.title("Runs")
st.caption(
    "Every compression, fine-tune and export is recorded in the run store (one SQLite file in the cache "
    "folder), with its settings, plan, figures and saved files, so a reloaded tab or a restarted server finds it."
)

store, problem = run_store.store()
if store is None:
    run_store.notice(problem)
    st.stop()
if store.read_only:
    st.warning(f"The run store {store.path} is read-only: runs are listed, nothing new is recorded or deleted.")
runs_view.message()

try:
    model, kind, order = runs_view.filters(store)
    rows = sorted(store.runs(model=model, kind=kind), key=runs_view.SORTS[order])
except LowrankLabError as err:
    st.error(str(err))
    st.stop()
if not rows:
    st.info("No runs here yet. Compress a model on the **Ranks** page or fine-tune one on the **LoRA** page.")
    st.stop()

st.caption(f"{len(rows)} run(s) · {store.path}")
runs_view.table(rows)
runs_view.details(store, runs_view.choose(rows))
runs_view.charts(store, rows, model)
