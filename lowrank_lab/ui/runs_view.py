"""The Runs page's parts: filters, the table, one run's details, reopening and deleting it, the charts.

Reopening loads a run's saved checkpoint (or adapter) into the session, where the LoRA and
Export pages find it, as if it had just been made; a run of another model switches the app to
that model first. Deleting asks for a confirmation and removes only what lowrank_lab saved for
the run in its own folder.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import ModelSpec
from lowrank_lab.prediction.curves import best_curve, uniform_curve
from lowrank_lab.runs import KINDS, RunStore
from lowrank_lab.runs.frontier import measured, score_runs
from lowrank_lab.runs.records import RunRow
from lowrank_lab.runs.reopen import recorded_comparison, reopen_adapter, reopen_compressed
from lowrank_lab.ui import prediction_view, state
from lowrank_lab.ui.cache import loaded_model
from lowrank_lab.ui.runs_charts import frontier_figure, prediction_figure

MODEL, KIND, SORT, CHOSEN = "runs_model", "runs_kind", "runs_sort", "runs_chosen"
REOPEN, DELETE, CONFIRM, CANCEL = "runs_reopen", "runs_delete", "runs_confirm", "runs_cancel"
PENDING = "runs_pending_delete"  # the id of the run a Delete click asked about
MESSAGE = "runs_message"  # ("success" | "error", text) shown once at the top
ALL = "every model"
EVERY_KIND = "every kind"
SORTS = {
    "newest first": lambda r: -r.id,
    "oldest first": lambda r: r.id,
    "lowest perplexity": lambda r: (r.perplexity is None, r.perplexity or 0.0),
    "fewest parameters kept": lambda r: (r.linear_kept is None, r.linear_kept or 0.0),
}


def message() -> None:
    shown = st.session_state.pop(MESSAGE, None)
    if shown is not None:
        (st.success if shown[0] == "success" else st.error)(shown[1])


def filters(store: RunStore) -> tuple[str | None, str | None, str]:
    """Model, kind and order of the table (the current model's runs first, when it has any)."""
    models = store.models()
    current = state.current_spec().source
    options = [ALL, *models]
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", options, index=options.index(current) if current in models else 0, key=MODEL)
    kind = c2.selectbox("Kind", [EVERY_KIND, *KINDS], key=KIND)
    order = c3.selectbox("Order", list(SORTS), key=SORT)
    return (None if model == ALL else model), (None if kind == EVERY_KIND else kind), order


def _frame(rows: list[RunRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r.id for r in rows],
            "when": [dt.datetime.fromtimestamp(r.created) for r in rows],
            "kind": [r.kind for r in rows],
            "model": [r.model for r in rows],
            "method": [r.method for r in rows],
            "ranks": [r.allocation for r in rows],
            "budget %": [None if r.keep is None else 100 * r.keep for r in rows],
            "linear kept %": [None if r.linear_kept is None else 100 * r.linear_kept for r in rows],
            "params kept": [r.params_kept for r in rows],
            "perplexity": [r.perplexity for r in rows],
            "× dense": [
                r.perplexity / r.perplexity_dense if r.perplexity and r.perplexity_dense else None for r in rows
            ],  # fmt: skip
            "predicted": [r.predicted_perplexity for r in rows],
            "files": [r.status for r in rows],
            "from": [r.origin for r in rows],
        }
    )


COLUMNS = {
    "run": st.column_config.NumberColumn(format="#%d", width="small"),
    "when": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    "budget %": st.column_config.NumberColumn(format="%.0f"),
    "linear kept %": st.column_config.NumberColumn(format="%.1f"),
    "params kept": st.column_config.NumberColumn(format="localized"),
    "perplexity": st.column_config.NumberColumn(format="%.2f"),
    "× dense": st.column_config.NumberColumn(format="%.2f×"),
    "predicted": st.column_config.NumberColumn(format="%.2f", help="Predicted from calibration before measuring"),
    "files": st.column_config.TextColumn(
        help="ok · missing (removed by hand: the run can still be deleted) · no files"
    ),
}


def table(rows: list[RunRow]) -> None:
    """The runs (click a header to sort in the browser)."""
    st.dataframe(_frame(rows), hide_index=True, column_config=COLUMNS, height=min(420, 38 + 35 * len(rows)),
                 key="runs_table")  # fmt: skip
    missing = sum(r.status == "missing" for r in rows)
    if missing:
        st.warning(
            f"{missing} run(s) show **missing**: their saved files were removed by hand. They cannot be reopened; "
            "delete them below."
        )


def _label(row: RunRow) -> str:
    when = dt.datetime.fromtimestamp(row.created).strftime("%Y-%m-%d %H:%M")
    what = " · ".join(x for x in (row.kind, row.model, row.method, row.allocation) if x)
    ppl = f" · perplexity {row.perplexity:.2f}" if row.perplexity is not None else ""
    return f"#{row.id} · {when} · {what}{ppl}" + (" · files missing" if row.status == "missing" else "")


def choose(rows: list[RunRow]) -> RunRow:
    by_id = {r.id: r for r in rows}
    chosen = st.selectbox("Run", list(by_id), format_func=lambda i: _label(by_id[i]), key=CHOSEN)
    return by_id.get(chosen, rows[0])


def details(store: RunStore, row: RunRow) -> None:
    """The run's settings, figures, prediction and stage report, and what can be done with it."""
    try:
        run = store.get(row.id)
    except LowrankLabError as err:
        st.error(str(err))
        return
    with st.expander(f"Run #{row.id} in full", expanded=False):
        st.json({"settings": run.settings, "figures": _short(run.figures), "prediction": run.prediction,
                 "stages": list(run.stages), "plan": None if run.plan is None else f"{len(run.plan)} ranks",
                 "artifacts": [{"role": a.role, "path": a.path, "deleted with the run": a.owned}
                               for a in row.artifacts]})  # fmt: skip
    actions(store, row)


def _short(figures: dict) -> dict:
    return {k: v for k, v in figures.items() if k not in ("losses", "val_losses")}


def actions(store: RunStore, row: RunRow) -> None:
    """Reopen (a compression's model, a fine-tune's adapter) and delete, with a confirmation."""
    reopenable = row.kind in ("compression", "finetune") and row.artifacts and row.status != "missing"
    what = "compressed model" if row.kind == "compression" else "adapter"
    c1, c2 = st.columns(2)
    if c1.button(f"Reopen its {what} for the LoRA and Export pages", key=REOPEN, disabled=not reopenable,
                 help=None if reopenable else "Only a compression or fine-tune whose saved files are there"):  # fmt: skip
        _reopen(store, row)
        st.rerun()
    if c2.button(f"Delete run #{row.id}…", key=DELETE):
        st.session_state[PENDING] = row.id
    if st.session_state.get(PENDING) == row.id:
        owned = [a.path for a in row.artifacts if a.owned and a.role not in row.missing]
        files = f" and its files ({', '.join(owned)})" if owned else ""
        st.warning(f"Delete run #{row.id}{files}? This cannot be undone.")
        y, n = st.columns(2)
        if y.button("Yes, delete", key=CONFIRM, type="primary"):
            st.session_state.pop(PENDING, None)
            _delete(store, row)
            st.rerun()
        if n.button("Cancel", key=CANCEL):
            st.session_state.pop(PENDING, None)
            st.rerun()


def _reopen(store: RunStore, row: RunRow) -> None:
    try:
        run = store.get(row.id)
        if row.model != state.current_spec().source:
            state.set_model_source(row.model)  # the run's model becomes the app's
        with st.spinner(f"Loading run #{row.id}…"):
            loaded = loaded_model(ModelSpec(row.model))
            if row.kind == "compression":
                compressed = reopen_compressed(run, loaded)
                st.session_state[state.COMPRESSED] = state.CompressionRun(
                    compressed, recorded_comparison(run), row.allocation or "plan"
                )
                text = f"Run #{row.id}'s compressed model is open: the **LoRA** page can heal it, the **Export** page download it."  # noqa: E501
            else:
                st.session_state[state.ADAPTER] = reopen_adapter(run, loaded)
                text = f"Run #{row.id}'s adapter is open: the **Export** page can download it."
    except LowrankLabError as err:
        st.session_state[MESSAGE] = ("error", f"Could not reopen run #{row.id}: {err}")
        return
    st.session_state[MESSAGE] = ("success", text)


def _delete(store: RunStore, row: RunRow) -> None:
    try:
        deleted = store.delete(row.id)
    except LowrankLabError as err:
        st.session_state[MESSAGE] = ("error", f"Could not delete run #{row.id}: {err}")
        return
    files = f" and {len(deleted.removed)} saved folder(s)" if deleted.removed else ""
    kept = f" Kept: {'; '.join(deleted.kept)}." if deleted.kept else ""
    st.session_state[MESSAGE] = ("success", f"Deleted run #{row.id}{files}.{kept}")
    st.session_state.pop(CHOSEN, None)


def charts(store: RunStore, rows: list[RunRow], model: str | None) -> None:
    """The measured frontier beside the predicted curve, and predicted against measured (one model's compressions)."""
    model = model or (rows[0].model if rows else None)
    try:
        mine = store.runs(model=model, kind="compression")
    except LowrankLabError as err:
        st.error(str(err))
        return
    st.subheader(f"Frontier of {model}")
    if not measured(mine):
        st.info("No measured compression of this model yet: compress one on the **Ranks** page (or with the CLI).")
        return
    basis = prediction_view.cached_basis(ModelSpec(model))
    curves = []
    if basis is not None:
        basis = basis.with_fit(prediction_view.fit_for(model))
        curves = [c for c in (best_curve(basis), uniform_curve(basis)) if c is not None]
    else:
        st.caption("The predicted curve shows once this model is calibrated (the Ranks or Spectra page).")
    dense = next((r.perplexity_dense for r in mine if r.perplexity_dense), None)
    left, right = st.columns(2)
    left.plotly_chart(frontier_figure(mine, curves, dense), key="runs_frontier")
    score = score_runs(mine)
    right.plotly_chart(prediction_figure(mine, score), key="runs_predicted")
    if score.spearman is not None:
        trust = "orders plans well" if score.spearman >= 0.9 else "orders plans only roughly"
        right.caption(
            f"Over {score.runs} whitened compressions the prediction {trust} (ρ = {score.spearman:.2f}); measured is "
            f"{score.median_ratio:.2f}× predicted at the median. Each new measurement refits its scale."
        )
