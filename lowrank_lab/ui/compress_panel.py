"""The Ranks page's "Compress and evaluate": settings in a form, the run with progress, the results.

The compressed model is a copy (the shared model is untouched) and goes, with what was measured,
to ``st.session_state[state.COMPRESSED]`` (a :class:`~lowrank_lab.ui.state.CompressionRun`) for
the LoRA and Export pages. A failed run shows its message and keeps whatever an earlier run
finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from lowrank_lab.comparison import Comparison, EvalSettings, compare
from lowrank_lab.compress import CalibrationSettings, allocate, compress
from lowrank_lab.data.text import decode_text_upload
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import METHODS, LoadedModel, Method
from lowrank_lab.plan import RankPlan
from lowrank_lab.runs.record import record_compression_run, run_id_of
from lowrank_lab.ui import run_store, state
from lowrank_lab.ui.cache import calibration_cache
from lowrank_lab.ui.formatting import params

FORM = "compress_form"

METHOD_HELP = {
    "svd": "plain truncated SVD of each weight",
    "whitened": "SVD of W·S, S from the layer's input statistics on calibration text (SVD-LLM)",
    "pca": "project each layer's output on its principal components on calibration text",
}
RANKS_FROM = {
    "plan": "this page's plan (the sliders)",
    "uniform": "uniform: every matrix keeps the budget",
    "auto": "auto: spend the budget where it hurts least",
}


def _progress_fn(bar, what: str):
    def update(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{what}: {message}" if message else what)

    return update


def _calibration(samples: int, seq_len: int, upload):
    if upload is None:
        return CalibrationSettings(samples=int(samples), seq_len=int(seq_len))
    text = decode_text_upload(upload.getvalue(), upload.name)
    return CalibrationSettings(int(samples), int(seq_len), text, f"uploaded {upload.name}")


def _evaluation(upload) -> EvalSettings:
    if upload is None:
        return EvalSettings()
    return EvalSettings(text=decode_text_upload(upload.getvalue(), upload.name), source=f"uploaded {upload.name}")


@dataclass(frozen=True, eq=False)
class FormValues:
    """What the form was submitted with (uploads as Streamlit's uploaded files, or None)."""

    method: Method
    ranks: str  # "plan" (the sliders) or an allocation strategy
    keep: float
    samples: int
    seq_len: int
    upload: object | None
    eval_upload: object | None
    evaluate: bool


def _record(store, loaded, compressed, calibration, comparison, evaluation, values: FormValues, bar) -> int:
    """Record the run (its checkpoint saved into the store's folder, its prediction beside what was measured)."""
    return record_compression_run(
        store, loaded, compressed, calibration, comparison=comparison, evaluation=evaluation, allocation=values.ranks,
        keep=None if values.ranks == "plan" else values.keep, origin="app", cache=calibration_cache(),
        progress=_progress_fn(bar, "recording the run (predicting from calibration)"),
    )  # fmt: skip


def _run(loaded: LoadedModel, plan: RankPlan, values: FormValues) -> None:
    bar = st.progress(0.0, text="starting")
    try:
        calibration = _calibration(values.samples, values.seq_len, values.upload)
        if values.ranks != "plan":
            plan = allocate(
                loaded,
                values.keep,
                values.ranks,
                values.method,
                calibration,
                progress=_progress_fn(bar, f"allocating ({values.ranks})"),
                cache=calibration_cache(),
            )
        compressed = compress(
            loaded,
            plan,
            values.method,
            calibration,
            progress=_progress_fn(bar, f"compressing ({values.method})"),
            cache=calibration_cache(),
        )
        comparison = None
        evaluation = _evaluation(values.eval_upload)
        if values.evaluate:
            comparison = compare(loaded, compressed, evaluation, progress=_progress_fn(bar, "evaluating"))
        record = lambda store: _record(store, loaded, compressed, calibration, comparison, evaluation, values, bar)  # noqa: E731
        run_store.attempt(record, "Recording this run")
    finally:
        bar.empty()  # a failed step leaves no stale bar behind
    st.session_state[state.COMPRESSED] = state.CompressionRun(compressed, comparison, values.ranks)
    if values.method != "svd":
        st.session_state[state.CALIBRATION] = state.Calibration(loaded.spec.source, calibration)


def form(loaded: LoadedModel, plan: RankPlan) -> None:
    """The settings form; on submit, compress (and measure) and keep the result in the session."""
    with st.form(FORM):
        c1, c2, c3 = st.columns(3)
        method = c1.selectbox(
            "Method", METHODS, index=METHODS.index("whitened"), format_func=lambda m: f"{m} — {METHOD_HELP[m]}"
        )
        ranks = c2.radio("Ranks", list(RANKS_FROM), format_func=RANKS_FROM.get, key="compress_ranks")
        keep = c3.slider(
            "Budget: % of linear-layer parameters kept (uniform, auto)", 5, 100, 80, step=5, key="compress_keep"
        )
        c1, c2, c3 = st.columns(3)
        samples = c1.number_input("Calibration samples", 1, 512, 32, key="compress_samples")
        seq_len = c2.number_input("Tokens per sample", 8, 2048, 256, step=8, key="compress_seq_len")
        evaluate = c3.checkbox("Measure: perplexity, generations, latency, memory", True, key="compress_evaluate")
        c1, c2 = st.columns(2)
        upload = c1.file_uploader(
            "Calibration text (.txt, UTF-8; default: the built-in calibration split)",
            type=["txt"],
            key="compress_upload",
        )
        eval_upload = c2.file_uploader(
            "Evaluation text (.txt, UTF-8; default: the built-in evaluation split)",
            type=["txt"],
            key="compress_eval_upload",
        )
        submitted = st.form_submit_button("Compress and evaluate", type="primary")
    if submitted:
        values = FormValues(method, ranks, keep / 100, int(samples), int(seq_len), upload, eval_upload, evaluate)
        try:
            _run(loaded, plan, values)
        except LowrankLabError as err:
            st.error(f"Compression stopped: {err}")


def _figures_table(report: Comparison) -> pd.DataFrame:
    d, c = report.dense, report.compressed
    mib = 2**20
    rows = [
        ("parameters", d.params, c.params),
        ("weights (MiB, as loaded)", d.bytes / mib, c.bytes / mib),
        (f"perplexity ({report.eval_source}, {report.eval_tokens:,} tokens)", d.perplexity, c.perplexity),
        (f"forward latency (ms, 1×{report.latency_tokens} tokens, median)", d.latency_ms, c.latency_ms),
        ("peak memory of that forward (MiB)", d.peak_memory_bytes / mib, c.peak_memory_bytes / mib),
    ]
    frame = pd.DataFrame(rows, columns=["figure", "dense", "compressed"]).dropna()
    frame["compressed / dense"] = frame["compressed"] / frame["dense"]
    return frame


def _recorded(compressed) -> None:
    """Which run this is, and what the calibration predicted beside what was measured."""
    run_id = run_id_of(compressed)
    if run_id is None:
        return
    run = run_store.attempt(lambda s: s.get(run_id), "Reading the run")
    if run is None:
        return
    text = f"Recorded as run #{run_id} (the **Runs** page lists it; its checkpoint is kept in the cache folder)."
    p, measured = run.prediction, run.row.perplexity
    if p.get("perplexity") is not None and measured is not None:
        text += (
            f" Predicted perplexity {p['perplexity']:.2f} ({p['perplexity_low']:.2f}–{p['perplexity_high']:.2f}), "
            f"measured {measured:.2f}."
        )
    st.caption(text)


def _load_plan_into_sliders(plan: RankPlan) -> None:
    st.session_state[state.PLAN] = plan  # the Ranks controls adopt an outside plan on the next run


def results(source: str) -> None:
    """The last run's figures, generations side by side, and its plan offered to the sliders."""
    run = st.session_state.get(state.COMPRESSED)
    if not isinstance(run, state.CompressionRun):
        return
    compressed, report, ranks = run.compressed, run.comparison, run.ranks_from
    if compressed.source.source != source:
        st.info(f"The last compressed model was made from {compressed.source.source}; it stays on the Export page.")
        return
    st.success(
        f"Compressed {len(compressed.plan)} layers with {compressed.method} "
        f"({params(compressed.params.compressed)} parameters). "
        "It is ready for the LoRA and Export pages."
    )
    _recorded(compressed)
    if report is not None:
        st.dataframe(
            _figures_table(report),
            hide_index=True,
            column_config={
                "dense": st.column_config.NumberColumn(format="localized"),
                "compressed": st.column_config.NumberColumn(format="localized"),
                "compressed / dense": st.column_config.NumberColumn(format="%.3f×"),
            },
            key="compress_figures",
        )
        for g in report.generations:
            st.markdown(f"**{g.prompt}**")
            left, right = st.columns(2)
            for column, label, text in ((left, "dense", g.dense), (right, "compressed", g.compressed)):
                column.caption(label)
                column.text(text or "(no text: only special tokens were generated)")
    if ranks != "plan":
        st.button(
            f"Load this {ranks} plan into the sliders",
            key="compress_load_plan",
            on_click=_load_plan_into_sliders,
            args=(compressed.plan,),
        )
