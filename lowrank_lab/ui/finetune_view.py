"""The LoRA page's run: start a job, show it live (progress, loss, Stop), then the before/after results."""

from __future__ import annotations

import streamlit as st

from lowrank_lab.data import TrainingSource, prepare
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.finetune import LoraSettings
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.ui import state
from lowrank_lab.ui.finetune_charts import loss_figure
from lowrank_lab.ui.finetune_job import TrainingJob

JOB = "lora_job"  # session key: the TrainingJob of this session (running or finished)
POLL_SECONDS = 1.0


def current_job() -> TrainingJob | None:
    return st.session_state.get(JOB)


def start(base: LoadedModel | CompressedModel, source: TrainingSource, settings: LoraSettings) -> None:
    """Tokenize the data (errors stop the page, nothing trains) and start training in the background."""
    bar = st.progress(0.0, text="Tokenizing the training data…")

    def tokenized(done: int, total: int, message: str) -> None:
        bar.progress(done / max(total, 1), text=f"Tokenizing the training data… {done:,} of {total:,} texts")

    try:
        data = prepare(source, base.tokenizer, settings.max_seq_len, seed=settings.seed, progress=tokenized)
    except LowrankLabError as err:
        bar.empty()
        st.error(str(err))
        st.stop()
    bar.empty()
    st.session_state[JOB] = TrainingJob(base, data, settings).start()


_WAITING = {
    "starting": "Starting…",
    "samples before": "Generating the samples before training…",
    "training": "Putting the adapter on a copy of the model and measuring the validation loss before…",
}


def _progress_text(job: TrainingJob) -> tuple[float, str]:
    if not job.steps:
        return 0.0, _WAITING.get(job.phase, "Finishing…")
    last = job.steps[-1]
    text = (
        f"Step {last.step}/{last.total_steps} · loss {last.loss:.3f} · {last.tokens_per_s:,.0f} tokens/s · "
        f"about {last.seconds_left:,.0f} s left"
    )
    if job.phase == "samples after":
        text = f"Trained {last.step} steps; generating the samples after…"
    return last.step / last.total_steps, text


def _live_chart(job: TrainingJob) -> None:
    steps = list(job.steps)
    losses = [(s.step, s.loss) for s in steps]
    vals = [(s.step, s.val_loss) for s in steps if s.val_loss is not None]
    total = steps[-1].total_steps if steps else job.settings.total_steps(len(job.data.train))
    st.plotly_chart(loss_figure(losses, vals, max(total, 1)), key="lora_live_loss")


@st.fragment(run_every=POLL_SECONDS)
def live(job: TrainingJob) -> None:
    """Progress, the loss so far and a Stop button, redrawn every second while the job runs."""
    if job.done:
        st.rerun()  # the whole page: show the results
    fraction, text = _progress_text(job)
    st.progress(fraction, text=text)
    stopping = job.control.stop_requested
    st.button(
        "Stopping after this step…" if stopping else "Stop (keep the adapter so far)",
        key="lora_stop",
        on_click=job.control.stop,
        disabled=stopping or job.phase != "training",
    )
    _live_chart(job)


def _metrics(job: TrainingJob) -> None:
    report = job.result.report
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Validation loss",
        f"{report.val_loss_after:.3f}",
        f"{report.val_loss_after - report.val_loss_before:+.3f} from {report.val_loss_before:.3f}",
        delta_color="inverse",
    )
    c2.metric(
        "Validation perplexity",
        f"{report.perplexity_after:.2f}",
        f"{report.perplexity_after - report.perplexity_before:+.2f} from {report.perplexity_before:.2f}",
        delta_color="inverse",
    )
    c3.metric(
        "Steps",
        f"{report.steps_done}/{report.steps_planned}",
        "stopped early" if report.stopped else None,
        delta_color="off",
    )
    c4.metric("Tokens/s", f"{report.tokens_per_s:,.0f}", f"{report.tokens:,} tokens", delta_color="off")


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
    if job.error:
        st.error(job.error)
        return
    adapter = job.result
    if st.session_state.get(state.ADAPTER) is not adapter:
        st.session_state[state.ADAPTER] = adapter
    report = adapter.report
    st.subheader("Result")
    st.success(
        f"LoRA adapter on the {adapter.base} model ({report.trainable_params:,} trainable parameters, "
        f"{report.train_seconds:.1f} s of training). It is kept for the **Export** page."
    )
    _metrics(job)
    st.plotly_chart(loss_figure(list(report.losses), list(report.val_losses), report.steps_done), key="lora_loss")
    if job.prompts:
        st.subheader("The same prompts, before and after")
        samples(job.prompts, job.before, job.after)
