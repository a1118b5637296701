"""A fine-tune as a background :class:`~lowrank_lab.ui.jobs.Job`, so the page stays live and Stop works.

Its stages: the data (tokenized), before training (the copy, the adapters, the validation loss before), training
(one report per step), after training (the validation loss after) and the samples: the same
prompts continued by the untouched base and by the trained adapter. The samples of the base
come *after* training, because the base never changes: the first training step starts as soon
as the loss before is known.

Stop ends the job at its next report before training starts (nothing is kept), and during
training ends it after the current step, keeping the adapter so far. A job given ``record``
ends by saving the adapter into the run store (its last stage); a store problem is kept in
``record_error`` and never loses the adapter.

The thread never touches Streamlit: it only appends to plain lists and sets attributes, which
the page reads on each rerun (or each tick of a ``st.fragment(run_every=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lowrank_lab.data import PreparedData, TrainingSource, prepare
from lowrank_lab.errors import Cancelled, LowrankLabError
from lowrank_lab.finetune import LoraSettings, StepInfo, TrainControl, TrainedAdapter, finetune, generate
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.ui.jobs import Job

SAMPLE_TOKENS = 32
# Relative costs, in training steps: a forward pass is about a third of a training step
# (forward, backward through every layer, optimizer), and one generated token about 1/50 of
# a step of 4 × 128 tokens.
FORWARD_SHARE = 1 / 3
TOKEN_SHARE = 1 / 50
DATA, BEFORE, TRAINING, AFTER, SAMPLES, RECORD = (
    "data", "before training", "training", "after training", "samples", "recording",
)  # fmt: skip
DEMO_PROMPTS = 3  # what the built-in sets and uploads give as sample prompts, for the weights


def validation_steps(settings: LoraSettings) -> float:
    """What one validation costs, in training steps (its forward passes at a third of a step each)."""
    return math.ceil(settings.eval_examples / settings.batch_size) * FORWARD_SHARE


class TrainingJob:
    """One fine-tune: the validation loss before, training, the loss after and the samples.

    Attributes:
        job: the :class:`Job` (progress, Stop, done, error, cancelled).
        data: the tokenized data, once the job has prepared it (None before).
        control: stops training after the current step.
        steps: a :class:`StepInfo` per step done so far.
        validations: ``(step, validation loss)`` as measured: step 0 before training, then
            every ``eval_every`` steps, then after the last step.
        result: the :class:`TrainedAdapter` once done (None on error or cancel).
        prompts, before, after: the sample prompts and their generations by the base and the adapter.
        reported: set by the page once it has taken the result (so it is taken once).
        record: called in the thread with the finished adapter (the run store saves and records
            it); returns the run's id, kept in ``run_id``. Its error goes to ``record_error``,
            never to the job's error: the adapter is there either way.
    """

    def __init__(
        self,
        base: LoadedModel | CompressedModel,
        source: TrainingSource,
        settings: LoraSettings,
        record: Callable[[TrainedAdapter], int] | None = None,
    ):
        self.base, self.source, self.settings = base, source, settings
        self.record = record
        self.run_id: int | None = None
        self.record_error: str | None = None
        self.data: PreparedData | None = None
        self.control = TrainControl()
        self.steps: list[StepInfo] = []
        self.validations: list[tuple[int, float]] = []
        self.prompts: list[str] = []
        self.before: list[str] = []
        self.after: list[str] = []
        self.reported = False
        total = settings.steps or 1  # the page always asks for steps (epochs: known once tokenized)
        val = validation_steps(settings)
        middle = (total - 1) // settings.eval_every if settings.eval_every else 0
        weights = {
            DATA: 0.5,  # tokenizing: seconds at most (uploads are capped)
            BEFORE: 0.5 + val,  # half a step for the copy and the adapters
            TRAINING: total + middle * val,
            AFTER: val,
            SAMPLES: 2 * DEMO_PROMPTS * SAMPLE_TOKENS * TOKEN_SHARE,
        }
        if record is not None:
            weights[RECORD] = 0.5  # writing a small adapter folder and one row
        self.job: Job[TrainedAdapter] = Job("Training", weights, self._run)
        self.job.on_stop(self.control.stop)

    @property
    def chat(self) -> bool:
        return self.data is not None and self.data.style == "pairs"

    @property
    def total_steps(self) -> int:
        if self.data is None:
            return self.settings.steps or 1
        return self.settings.total_steps(len(self.data.train))

    @property
    def done(self) -> bool:
        return self.job.done

    @property
    def result(self) -> TrainedAdapter | None:
        return self.job.result

    @property
    def error(self) -> str | None:
        return self.job.error

    def start(self) -> TrainingJob:
        self.job.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        return self.job.join(timeout)

    def _on_step(self, info: StepInfo) -> None:
        self.steps.append(info)
        if info.val_loss is not None:
            self.validations.append((info.step, info.val_loss))
        self.job.stage(TRAINING)(
            info.step,
            info.total_steps,
            f"step {info.step}/{info.total_steps} · loss {info.loss:.3f} · {info.tokens_per_s:,.0f} tokens/s",
        )

    def _on_progress(self, done: int, total: int, message: str) -> None:
        stage = AFTER if self.steps or not self.job.cancellable else BEFORE
        self.job.stage(stage)(done, total, message)

    def _on_validation(self, step: int, loss: float) -> None:
        self.validations.append((step, loss))
        if step == 0:
            if self.job.stop_requested:
                raise Cancelled("stopped before the first training step")
            # From here on Stop ends training after the current step and keeps the adapter.
            self.job.cancellable = False
            self.job.tell(f"step 1/{self.total_steps}: the first training step")

    def _run(self, job: Job) -> TrainedAdapter:
        tokenizing = job.stage(DATA)
        name = self.source.name

        def tokenized(done: int, total: int, _: str) -> None:
            tokenizing(done, total, f"tokenizing {name}: {done:,}/{total:,} texts")

        tokenizing(0, 1, f"tokenizing {name}")
        self.data = prepare(self.source, self.base.tokenizer, self.settings.max_seq_len, seed=self.settings.seed,
                            progress=tokenized)  # fmt: skip
        self.prompts = list(self.data.demo_prompts)
        result = finetune(self.base, self.data, self.settings, self._on_step, self.control, self._on_progress,
                          self._on_validation)  # fmt: skip
        if result.report.steps_done == 0:  # Stop came between the loss before and the first step
            raise Cancelled("stopped before the first training step")
        samples = job.stage(SAMPLES)
        n = len(self.prompts)
        tokenizer = self.base.tokenizer
        self.before = generate(self.base.model, tokenizer, self.prompts, self.chat, SAMPLE_TOKENS,
                               progress=lambda d, t, m: samples(d, 2 * t, f"before training: {m}"))  # fmt: skip
        self.after = generate(result.model, tokenizer, self.prompts, self.chat, SAMPLE_TOKENS,
                              progress=lambda d, t, m: samples(t + d, 2 * t, f"after training: {m}"))  # fmt: skip
        samples(2 * n, 2 * n, "done")
        if self.record is not None:
            recording = job.stage(RECORD)
            recording(0, 1, "saving the adapter and recording the run")
            try:
                self.run_id = self.record(result)
            except LowrankLabError as err:
                self.record_error = str(err)
            recording(1, 1, "recorded")
        return result
