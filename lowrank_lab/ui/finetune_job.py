"""A fine-tune running in a background thread, so the page stays live and a Stop button works.

The thread never touches Streamlit: it only appends to plain lists and sets attributes, which
the page reads on each rerun (or each tick of a ``st.fragment(run_every=...)``).
"""

from __future__ import annotations

import threading

from lowrank_lab.data import PreparedData
from lowrank_lab.errors import LowrankLabError
from lowrank_lab.finetune import LoraSettings, StepInfo, TrainControl, TrainedAdapter, finetune, generate
from lowrank_lab.models import CompressedModel, LoadedModel

SAMPLE_TOKENS = 32


class TrainingJob:
    """One fine-tune: samples before, training, samples after, in a daemon thread.

    Attributes:
        control: ``control.stop()`` ends training after the current step (the adapter is kept).
        steps: a :class:`StepInfo` per step done so far.
        phase: ``starting``, ``samples before``, ``training``, ``samples after`` or ``done``.
        result: the :class:`TrainedAdapter` once done (None on error).
        error: the error message, if it failed.
        prompts, before, after: the sample prompts and their generations before and after.
    """

    def __init__(self, base: LoadedModel | CompressedModel, data: PreparedData, settings: LoraSettings):
        self.base, self.data, self.settings = base, data, settings
        self.control = TrainControl()
        self.steps: list[StepInfo] = []
        self.phase = "starting"
        self.result: TrainedAdapter | None = None
        self.error: str | None = None
        self.prompts = list(data.demo_prompts)
        self.before: list[str] = []
        self.after: list[str] = []
        self._thread = threading.Thread(target=self._run, name="lowrank-lora", daemon=True)

    @property
    def chat(self) -> bool:
        return self.data.style == "pairs"

    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def _run(self) -> None:
        tokenizer = self.base.tokenizer
        try:
            self.phase = "samples before"
            self.before = generate(self.base.model, tokenizer, self.prompts, self.chat, SAMPLE_TOKENS)
            self.phase = "training"
            self.result = finetune(self.base, self.data, self.settings, self.steps.append, self.control)
            self.phase = "samples after"
            self.after = generate(self.result.model, tokenizer, self.prompts, self.chat, SAMPLE_TOKENS)
        except LowrankLabError as err:
            self.error = str(err)
        except Exception as err:  # a background thread has no one else to tell: the page shows it
            self.error = f"training failed: {type(err).__name__}: {err}"
        finally:
            self.phase = "done"
