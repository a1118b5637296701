"""The LoRA page's run: start a job, show it live (one bar, the loss so far, Stop), then the results."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.cache import model_digest
from lowrank_lab.data import TrainingSource
from lowrank_lab.finetune import LoraSettings
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.runs.record import record_finetune, run_id_of
from lowrank_lab.ui import job_view, run_store, state
from lowrank_lab.ui.finetune_charts import loss_figure
from lowrank_lab.ui.finetune_job import TrainingJob
from lowrank_lab.ui.formatting import params, sig
from lowrank_lab.ui.notices import Notice

JOB = "lora_job"  # session key: the TrainingJob of this session (running or finished)
NOTICE = "lora_notice"  # session key: a Notice about the last run, shown once


def current_job() -> TrainingJob | None:
    return st.session_state.get(JOB)


def start(base: LoadedModel | CompressedModel, source: TrainingSource, settings: LoraSettings) -> None:
    """Start the fine-tune in the background: tokenizing the data is its first step (Stop works at once)."""
    store = run_store.writable_store()
    record = None
    if store is not None:  # in the training thread, once done: the adapter saved into the store's folder
        details = dict(data=source.name, origin="app")
        if isinstance(base, CompressedModel):
            details["parent"] = run_id_of(base)
        else:
            details["model_digest"] = model_digest(base.model)
        record = lambda adapter: record_finetune(store, adapter, **details)  # noqa: E731
    st.session_state[JOB] = TrainingJob(base, source, settings, record).start()


def _live_chart(job: TrainingJob) -> None:
    steps = list(job.steps)
    losses = [(s.step, s.loss) for s in steps]
    st.plotly_chart(loss_figure(losses, list(job.validations), job.total_steps), key="lora_live_loss")


def live(job: TrainingJob) -> None:
    """One bar (step, loss, time left), Stop and the loss so far, redrawn every second while it runs."""
    job_view.live(job.job, key="lora_stop", stop_label="Stop (keep the adapter so far)", extra=lambda: _live_chart(job))


def finish(job: TrainingJob) -> None:
    """Keep a finished job's adapter for the Export page (once), or say why there is none."""
    if job.reported:
        return
    job.reported = True
    if job.result is not None:
        st.session_state[state.ADAPTER] = job.result
    elif job.job.cancelled:
        st.session_state[NOTICE] = Notice("info", "Stopped before the first training step: nothing was trained.")


def _metrics(job: TrainingJob) -> None:
    _report_metrics(job.result.report)


def _report_metrics(report) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Validation loss",
        f"{report.val_loss_after:.3f}",
        f"{report.val_loss_after - report.val_loss_before:+.3f} from {report.val_loss_before:.3f}",
        delta_color="inverse",
    )
    c2.metric(
        "Validation perplexity",
        sig(report.perplexity_after),
        f"{'+' if report.perplexity_after >= report.perplexity_before else ''}"
        f"{sig(report.perplexity_after - report.perplexity_before)} from {sig(report.perplexity_before)}",
        delta_color="inverse",
    )
    c3.metric("Steps", f"{report.steps_done}/{report.steps_planned}", help="Stopped early: the adapter holds the "
              "steps done." if report.stopped else None)  # fmt: skip
    c4.metric("Tokens/s", f"{report.tokens_per_s:,.0f}", help=f"{report.tokens:,} tokens trained on")
    if report.diverged:  # a loss or weight went non-finite: the adapter holds the last good step
        st.warning(report.stop_reason)
    elif report.stopped:
        st.caption(f"Stopped after {report.steps_done} of {report.steps_planned} steps; the adapter keeps them.")


def samples(prompts: list[str], before: list[str], after: list[str]) -> None:
    """Each prompt, then its greedy continuation before and after training side by side (text, wrapped)."""
    for prompt, old, new in zip(prompts, before, after):
        st.code(prompt, language=None, wrap_lines=True)
        left, right = st.columns(2)
        left.caption("Before")
        left.code(old or "(nothing)", language=None, wrap_lines=True)
        right.caption("After")
        right.code(new or "(nothing)", language=None, wrap_lines=True)


def results(job: TrainingJob) -> None:
    """Before/after figures, the loss chart and the samples; keeps the adapter for the Export page."""
    finish(job)
    notice = st.session_state.pop(NOTICE, None)  # shown once: the next action clears it
    if notice is not None:
        notice.show()
    if job.error:
        st.error(job.error)
        return
    adapter = job.result
    if adapter is None:
        return
    report = adapter.report
    st.subheader("Result")
    st.success(
        f"LoRA adapter on the {adapter.base} model ({params(report.trainable_params)} trainable parameters, "
        f"{report.train_seconds:,.1f} s of training, {job.job.seconds:,.0f} s in all). It is kept for the "
        "**Export** page."
    )
    if job.run_id is not None:
        st.caption(f"Recorded as run #{job.run_id}: the **Runs** page lists it and can reopen its adapter.")
    elif job.record_error is not None:
        run_store.notice(job.record_error)
    else:
        _, err = run_store.store()
        if err is not None:
            run_store.notice(err)
    _metrics(job)
    st.plotly_chart(loss_figure(list(report.losses), list(report.val_losses), report.steps_done), key="lora_loss")
    if job.prompts:
        st.subheader("The same prompts, before and after")
        samples(job.prompts, job.before, job.after)


def reopened() -> None:
    """The adapter the Runs page reopened into this session, with its recorded figures."""
    adapter = st.session_state.get(state.ADAPTER)
    run_id = run_id_of(adapter)
    if run_id is None or adapter.report is None:
        return
    report = adapter.report
    st.subheader("Reopened adapter")
    st.success(
        f"Run #{run_id}: a LoRA adapter on the {adapter.base} model, reopened from the **Runs** page; it is "
        "ready for the **Export** page."
    )
    _report_metrics(report)
    st.plotly_chart(loss_figure(list(report.losses), list(report.val_losses), report.steps_done), key="lora_loss")
