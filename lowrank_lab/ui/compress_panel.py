"""The Ranks page's "Compress and evaluate": settings in a form, the run as a background job, the results.

The run is a :class:`~lowrank_lab.ui.jobs.Job` (one bar with the current step and the time
left, Stop from the first second), so the page stays live while it works. The compressed model
is a copy (the shared model is untouched) and goes, with what was measured, to
``st.session_state[state.COMPRESSED]`` (a :class:`~lowrank_lab.ui.state.CompressionRun`) for
the LoRA and Export pages. The work is the one pipeline the command line and the benchmark run
(:func:`lowrank_lab.compress.pipeline.run_job`: allocate, compress block by block, compare, and
optionally the stage report), with this job's stages. A failed or stopped run says so once and
keeps whatever an earlier run finished. A finished run is recorded in the run store as the job's last step (its checkpoint
saved into the store's folder, the prediction beside what was measured); a store that cannot
take it leaves a note on the result, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from lowrank_lab.comparison import EvalSettings
from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.compress.distill import DistillSettings
from lowrank_lab.compress.guards import check_calibration
from lowrank_lab.compress.pipeline import CompressionJob, run_job, stage_weights
from lowrank_lab.data.text import decode_text_upload
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.models import METHODS, LoadedModel, Method
from lowrank_lab.plan import RankPlan
from lowrank_lab.progress import ProgressFn
from lowrank_lab.runs import RunStore
from lowrank_lab.runs.record import record_compression_run
from lowrank_lab.ui import compress_results, job_view, run_store, state
from lowrank_lab.ui.cache import calibration_cache, dense_figures_cache
from lowrank_lab.ui.jobs import Job
from lowrank_lab.ui.notices import Notice
from lowrank_lab.ui.widgets import kept

FORM = "compress_form"
JOB = "compress_job"  # session key: the Job of the compression under way (or just finished)
NOTICE = "compress_notice"  # session key: a Notice about the last run, shown once

METHOD_HELP = {
    "svd": "truncated SVD of each weight; needs no data",
    "whitened": "SVD of W·S block by block on what the compressed blocks produce, refit to the dense outputs",
    "pca": "each layer's output on its principal components on calibration text",
}
RANKS_FROM = {
    "plan": "this page's plan (the sliders)",
    "uniform": "uniform: every matrix keeps the budget",
    "auto": "auto: spend the budget where it hurts least",
}
# Widget key → default: what the form shows the first time.
DEFAULTS = {
    "compress_method": "whitened",
    "compress_ranks": "plan",
    "compress_keep": 80,
    "compress_samples": 32,
    "compress_seq_len": 256,
    "compress_evaluate": True,
    "compress_stages": False,
    "compress_distill": 0,
}
# What the bar says in each stage of the pipeline.
LABELS = {
    "dense": "measuring the dense model",
    "allocate": "allocating ranks",
    "compress": "compressing block by block",
    "stages": "measuring what each stage bought",
    "distill": "distilling end to end",
    "evaluate": "measuring against the dense model",
    "record": "recording the run",
}


@dataclass(frozen=True)
class Request:
    """One compression as asked for: the form's values with the uploads read."""

    method: Method
    ranks_from: str  # "plan" (the sliders) or an allocation strategy
    keep: float
    plan: RankPlan
    calibration: CalibrationSettings
    evaluation: EvalSettings | None
    stages: bool = False  # also measure perplexity after each stage (the gap waterfall)
    distill: DistillSettings = DistillSettings()  # end-to-end distillation after the walk (steps 0: none)

    def job(self) -> CompressionJob:
        """The pipeline's job for this request."""
        given = self.ranks_from == "plan"
        return CompressionJob(
            keep=self.keep,
            allocation="uniform" if given else self.ranks_from,
            plan=self.plan if given else None,
            method=self.method,
            calibration=self.calibration,
            distill=self.distill,
            evaluation=self.evaluation,
            stage_report=self.stages and self.evaluation is not None,
        )


def _request(plan: RankPlan, upload, eval_upload) -> Request:
    """The request from the form's widgets; reading an upload raises DataError on bad text."""
    s = st.session_state
    samples, seq_len = int(s["compress_samples"]), int(s["compress_seq_len"])
    calibration = CalibrationSettings(samples=samples, seq_len=seq_len)
    if upload is not None:
        text = decode_text_upload(upload.getvalue(), upload.name)
        calibration = CalibrationSettings(samples, seq_len, text, f"uploaded {upload.name}")
    evaluation = None
    if s["compress_evaluate"]:
        evaluation = EvalSettings()
        if eval_upload is not None:
            text = decode_text_upload(eval_upload.getvalue(), eval_upload.name)
            evaluation = EvalSettings(text=text, source=f"uploaded {eval_upload.name}")
    return Request(s["compress_method"], s["compress_ranks"], s["compress_keep"] / 100, plan, calibration, evaluation,
                   bool(s["compress_stages"]), DistillSettings(int(s["compress_distill"])))  # fmt: skip


def _labelled(progress: ProgressFn, label: str) -> ProgressFn:
    return lambda done, total, message: progress(done, total, f"{label}: {message}" if message else label)


def _weights(request: Request) -> dict[str, float]:
    """Each stage's rough share of the time: the pipeline's, and recording last."""
    return {**stage_weights(request.job()), "record": 0.5}  # the prediction (cached costs), the checkpoint


class _Labelled:
    """The job's stages with the bar's words in front of each step."""

    def __init__(self, job: Job, method: str, ranks_from: str):
        self.job = job
        self.labels = dict(LABELS, allocate=f"allocating ranks ({ranks_from})", compress=f"compressing ({method})")

    def stage(self, name: str) -> ProgressFn:
        return _labelled(self.job.stage(name), self.labels[name])


def _work(loaded: LoadedModel, request: Request, notes: tuple[str, ...]) -> Callable[[Job], state.CompressionRun]:
    """The job's body: allocate (unless the sliders' plan), compress a copy, compare with dense."""
    calibration_store, dense_store = calibration_cache(), dense_figures_cache()  # resolved in the page's thread
    runs = run_store.writable_store()

    def work(job: Job) -> state.CompressionRun:
        result = run_job(loaded, request.job(), cache=calibration_store, stages=_Labelled(job, request.method,
                         request.ranks_from), dense_cache=dense_store)  # fmt: skip
        compressed, comparison = result.compressed, result.comparison
        allocation = None if request.ranks_from == "plan" else result.allocation
        keep = None if request.ranks_from == "plan" else request.keep
        progress = _labelled(job.stage("record"), LABELS["record"])
        stopped = (
            () if result.distillation is None or not result.distillation.stopped else (result.distillation.stopped,)
        )
        noted = notes + stopped + _record(runs, loaded, result, request, keep, progress, calibration_store)
        return state.CompressionRun(
            compressed, comparison, request.ranks_from, allocation, keep, noted, result.stages, result.distillation
        )

    return work


def _record(runs: RunStore | None, loaded, result, request: Request, keep, progress, cache) -> tuple[str, ...]:
    """Record the finished run (in the job's thread); a store problem becomes a note, the model stays."""
    if runs is None:
        return ()  # the page says why the store is unavailable
    try:
        stages = () if result.stages is None else result.stages.to_dict()["stages"]
        record_compression_run(
            runs, loaded, result.compressed, request.calibration, comparison=result.comparison,
            evaluation=request.evaluation, allocation=request.ranks_from, keep=keep, origin="app", cache=cache,
            progress=progress, stages=stages,
        )  # fmt: skip
    except LowrankLabError as err:
        return (f"{run_store.NOT_RECORDED}: {err}",)
    return ()


def _start(loaded: LoadedModel, plan: RankPlan, upload, eval_upload) -> None:
    """Check the request (guard rails first) and start the job; errors show once and start nothing."""
    try:
        request = _request(plan, upload, eval_upload)
    except LowrankLabError as err:
        st.session_state[NOTICE] = Notice("error", f"Compression not started: {err}")
        return
    check = check_calibration(loaded, request.method, request.ranks_from, request.calibration)
    if check.level == "error":
        st.session_state[NOTICE] = Notice("error", f"Compression not started: {check.message()}.")
        return
    notes = (check.message() + ".",) if check.level == "warning" else ()
    job = Job("Compressing", _weights(request), _work(loaded, request, notes))
    st.session_state[JOB] = job.start()
    if request.method != "svd" or request.ranks_from == "auto":
        st.session_state[state.CALIBRATION] = state.Calibration(loaded.spec.source, request.calibration)


def _finish(job: Job) -> None:
    """Move a finished job's result into the session (once), or say why there is none."""
    st.session_state.pop(JOB, None)
    if job.result is not None:
        st.session_state[state.COMPRESSED] = job.result
    elif job.cancelled:
        st.session_state[NOTICE] = Notice(
            "info", f"Compression stopped after {job.seconds:,.0f} s; the last finished compressed model is kept."
        )
    else:
        st.session_state[NOTICE] = Notice("error", f"Compression stopped: {job.error}")


def _fields(loaded: LoadedModel, running: bool) -> tuple[object, object, bool]:
    """The form's widgets (values kept across runs and pages); returns the uploads and the submit."""
    for key, default in DEFAULTS.items():
        kept(key, default)
    c1, c2, c3 = st.columns(3)
    c1.radio("Method", METHODS, key="compress_method", captions=[METHOD_HELP[m] for m in METHODS])
    c2.radio("Ranks", list(RANKS_FROM), format_func=RANKS_FROM.get, key="compress_ranks")
    c3.slider("Budget: linear-layer parameters kept, % (uniform, auto)", 5, 100, step=5, key="compress_keep")
    c3.checkbox("Measure against the dense model", key="compress_evaluate",
                help="Perplexity on evaluation text, the same prompts generated, latency and peak memory.")  # fmt: skip
    c3.checkbox("…and what each stage bought", key="compress_stages",
                help="Perplexity after whitened uniform ranks, the allocated ranks, sequential inputs and the refit "
                "(the gap waterfall); compresses up to three more times.")  # fmt: skip
    c1, c2, c3 = st.columns(3)
    c1.number_input("Calibration samples", 1, 512, key="compress_samples")
    c2.number_input("Tokens per sample", 8, 2048, step=8, key="compress_seq_len")
    floor = check_calibration(loaded, "whitened", "plan", CalibrationSettings())
    c3.caption(
        f"whitened, pca and auto read samples × tokens of calibration text: at least {floor.recommended:,} here "
        f"({floor.widest_name.rsplit('.', 1)[-1]} reads {floor.widest_input:,}-wide inputs; 4× that keeps XᵀX "
        "well conditioned). svd with the plan or uniform ranks reads none."
    )
    c1, c2 = st.columns([1, 2])
    c1.number_input("Distillation steps (0: off)", 0, 2000, step=10, key="compress_distill")
    c2.caption(
        "After the block walk, train every factor to give the dense model's next-token distributions on the "
        "calibration text: 4 blocks per step. On smollm2-135m, 60 steps took 20% removed from 1.31× to 1.15× dense "
        "perplexity and 40% removed from 2.27× to 1.59×, for about 7.6 s per step on two CPU cores."
    )
    c1, c2 = st.columns(2)
    upload = c1.file_uploader("Calibration text (.txt, UTF-8; default: the built-in calibration split)",
                              type=["txt"], key="compress_upload")  # fmt: skip
    eval_upload = c2.file_uploader("Evaluation text (.txt, UTF-8; default: the built-in evaluation split)",
                                   type=["txt"], key="compress_eval_upload")  # fmt: skip
    label = "A compression is running…" if running else "Compress and evaluate"
    submitted = st.form_submit_button(label, type="primary", disabled=running)
    return upload, eval_upload, submitted


def form(loaded: LoadedModel, plan: RankPlan) -> None:
    """The settings form; on submit, a background job compresses (and measures) with live progress."""
    job = st.session_state.get(JOB)
    if isinstance(job, Job) and job.done:
        _finish(job)
        job = None
    running = isinstance(job, Job)
    with st.form(FORM):
        upload, eval_upload, submitted = _fields(loaded, running)
    if submitted and not running:
        _start(loaded, plan, upload, eval_upload)
        job = st.session_state.get(JOB)
        running = isinstance(job, Job)
    if running:
        job_view.live(job, key="compress_stop", stop_label="Stop (keep the last finished model)")
    notice = st.session_state.pop(NOTICE, None)  # shown once: the next action clears it
    if notice is not None:
        notice.show()


def results(source: str) -> None:
    """The last finished run (see :mod:`lowrank_lab.ui.compress_results`)."""
    compress_results.show(source)
