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

from lowrank_lab.comparison import Comparison, EvalSettings
from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.compress.pipeline import CompressionJob, run_job
from lowrank_lab.data.text import decode_text_upload
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import METHODS, LoadedModel, Method
from lowrank_lab.plan import RankPlan
from lowrank_lab.progress import ProgressEvent
from lowrank_lab.ui import state
from lowrank_lab.ui.cache import calibration_cache
from lowrank_lab.ui.formatting import params

FORM = "compress_form"

METHOD_HELP = {
    "svd": "plain truncated SVD of each weight",
    "whitened": "whitened SVD, block by block on what the compressed blocks produce, refit to the dense outputs",
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
    stages: bool = False


def _progress_sink(bar):
    """Bind the job's progress to one bar: "step · about N s left"."""

    def update(event: ProgressEvent) -> None:
        left = "" if event.eta_s is None else f" · about {event.eta_s:.0f} s left"
        bar.progress(event.fraction, text=f"{event.step}{left}")

    return update


def _run(loaded: LoadedModel, plan: RankPlan, values: FormValues) -> None:
    bar = st.progress(0.0, text="starting")
    try:
        calibration = _calibration(values.samples, values.seq_len, values.upload)
        job = CompressionJob(
            keep=values.keep,
            allocation="auto" if values.ranks == "plan" else values.ranks,
            plan=plan if values.ranks == "plan" else None,
            method=values.method,
            calibration=calibration,
            evaluation=_evaluation(values.eval_upload) if values.evaluate else None,
            stage_report=values.stages and values.evaluate,
        )
        result = run_job(loaded, job, _progress_sink(bar), cache=calibration_cache())
    finally:
        bar.empty()  # a failed step leaves no stale bar behind
    st.session_state[state.COMPRESSED] = state.CompressionRun(
        result.compressed, result.comparison, values.ranks, result
    )
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
        stages = c3.checkbox(
            "Also measure what each stage bought (compresses up to 3 more times)", False, key="compress_stages"
        )
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
        values = FormValues(
            method, ranks, keep / 100, int(samples), int(seq_len), upload, eval_upload, evaluate, stages
        )
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
    if run.result is not None:
        _explanation(run.result)
    if ranks != "plan":
        st.button(
            f"Load this {ranks} plan into the sliders",
            key="compress_load_plan",
            on_click=_load_plan_into_sliders,
            args=(compressed.plan,),
        )


def _explanation(result) -> None:
    """What each stage bought (when measured) and the candidates the allocation scored."""
    if result.stages is not None:
        rep = result.stages
        rows = [("dense", rep.dense_perplexity, 1.0)] + [(f.stage, f.perplexity, rep.ratio(f)) for f in rep.stages]
        st.caption(f"Perplexity after each stage ({rep.eval_source}, {rep.eval_tokens:,} tokens)")
        st.dataframe(
            pd.DataFrame(rows, columns=["stage", "perplexity", "× dense"]),
            hide_index=True,
            column_config={"× dense": st.column_config.NumberColumn(format="%.3f×")},
            key="compress_stages_table",
        )
    scored = [c for c in result.allocation.candidates if c.calibration_loss == c.calibration_loss]
    if len(scored) > 1:
        rows = [
            (c.name, c.linear_params, c.calibration_loss, i == result.allocation.chosen)
            for i, c in enumerate(result.allocation.candidates)
        ]
        st.caption(f"Allocation candidates: {result.allocation.scoring}")
        st.dataframe(
            pd.DataFrame(rows, columns=["candidate", "linear parameters", "calibration loss", "chosen"]),
            hide_index=True,
            key="compress_candidates_table",
        )
