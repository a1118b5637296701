"""What a LoRA fine-tune is asked to do (LoraSettings), what it reports (StepInfo, TrainReport),
and how a caller stops it (TrainControl)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Literal

from lowrank_lab.errors import ArgumentTypeError, SettingsError

Init = Literal["default", "pissa"]
Schedule = Literal["constant", "linear", "cosine"]
INITS: tuple[Init, ...] = ("default", "pissa")
SCHEDULES: tuple[Schedule, ...] = ("constant", "linear", "cosine")
ALL_LINEAR = "all-linear"
MAX_STEPS = 1_000_000  # far past any fine-tune here; a typo (epochs=1e9) must not run for ever

_INTS = ("r", "warmup_steps", "batch_size", "max_seq_len", "seed", "eval_every", "eval_examples")
_FLOATS = ("alpha", "dropout", "learning_rate", "max_grad_norm", "weight_decay")


@dataclass(frozen=True)
class LoraSettings:
    """Settings of a LoRA fine-tune (PEFT LoRA, AdamW, one learning-rate schedule).

    Attributes:
        r: the adapter's rank.
        alpha: LoRA's alpha; the update is scaled by ``alpha / r``.
        dropout: dropout on the adapter's input.
        targets: ``"all-linear"`` (every linear layer but the output head) or a tuple of the
            last parts of layer names, such as ``("q_proj", "v_proj")``. On a compressed model a
            factorized layer's adapters sit on its thin ``A`` and ``B`` Linears.
        init: ``"default"`` (PEFT's: A random, B zero) or ``"pissa"`` (A, B from each weight's
            top singular vectors, the rest left in the base; saved as a plain LoRA adapter).
        learning_rate: AdamW's peak learning rate.
        schedule: ``constant``, ``linear`` or ``cosine`` decay after ``warmup_steps``.
        warmup_steps: steps of linear warm-up from zero.
        steps: optimizer steps to take; or None to use ``epochs``.
        epochs: passes over the training examples (may be fractional), when ``steps`` is None.
        batch_size: examples per step.
        max_seq_len: tokens per text block; the most a prompt + response may have.
        seed: seeds the adapter's initialisation, dropout and the data order.
        eval_every: measure the validation loss every this many steps (0: only before and after).
        eval_examples: validate on at most this many held-out examples (a fixed subset).
        max_grad_norm: clip the gradient norm to this (0: no clipping).
        weight_decay: AdamW's weight decay.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str | tuple[str, ...] = ALL_LINEAR
    init: Init = "default"
    learning_rate: float = 1e-3
    schedule: Schedule = "linear"
    warmup_steps: int = 0
    steps: int | None = 50
    epochs: float | None = None
    batch_size: int = 4
    max_seq_len: int = 128
    seed: int = 0
    eval_every: int = 10
    eval_examples: int = 32
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0

    def __post_init__(self):
        _check_types(self)
        _check(isinstance(self.r, int) and self.r >= 1, f"r must be a positive integer, got {self.r!r}; use e.g. 8")
        _check(self.alpha > 0, f"alpha must be positive, got {self.alpha!r}; use e.g. 2·r = {2 * self.r}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout!r}; use e.g. 0.05")
        if isinstance(self.targets, list):
            object.__setattr__(self, "targets", tuple(self.targets))
        ok_targets = self.targets == ALL_LINEAR or (
            isinstance(self.targets, tuple) and self.targets and all(isinstance(t, str) and t for t in self.targets)
        )
        _check(ok_targets, f"targets {self.targets!r}: use {ALL_LINEAR!r} or layer names such as ('q_proj', 'v_proj')")
        _check(self.init in INITS, f"init {self.init!r} is unknown; use one of {', '.join(INITS)}")
        _check(
            0 < self.learning_rate < 1, f"learning_rate must be in (0, 1), got {self.learning_rate!r}; use e.g. 1e-3"
        )
        _check(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be 0 or more, got {self.warmup_steps!r}")
        _check(
            (self.steps is None) != (self.epochs is None),
            f"give exactly one of steps and epochs (got steps={self.steps!r}, epochs={self.epochs!r})",
        )
        _check(self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps!r}")
        if self.steps is not None and self.steps > MAX_STEPS:
            raise SettingsError(f"steps {self.steps:,} is more than {MAX_STEPS:,}; use fewer steps")
        _check(self.epochs is None or self.epochs > 0, f"epochs must be positive, got {self.epochs!r}; use e.g. 1")
        _check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size!r}")
        _check(
            8 <= self.max_seq_len <= 8192, f"max_seq_len must be in [8, 8192], got {self.max_seq_len!r}; use e.g. 128"
        )
        _check(self.seed >= 0, f"seed must be 0 or more, got {self.seed!r}")
        _check(self.eval_every >= 0, f"eval_every must be 0 (only before and after) or more, got {self.eval_every!r}")
        _check(self.eval_examples >= 1, f"eval_examples must be at least 1, got {self.eval_examples!r}")
        _check(self.max_grad_norm >= 0, f"max_grad_norm must be 0 (off) or more, got {self.max_grad_norm!r}")
        _check(self.weight_decay >= 0, f"weight_decay must be 0 or more, got {self.weight_decay!r}")

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for ``n_examples`` training examples (``steps``, or ``epochs`` worth).

        Raises:
            SettingsError: ``epochs`` of this data is more than :data:`MAX_STEPS` steps.
        """
        if self.steps is not None:
            return self.steps
        steps = max(1, math.ceil(self.epochs * n_examples / self.batch_size))
        if steps > MAX_STEPS:
            raise SettingsError(
                f"epochs={self.epochs:g} over {n_examples:,} examples is {steps:,} steps, more than {MAX_STEPS:,}; "
                "use fewer epochs"
            )
        return steps


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


def _check_types(settings: LoraSettings) -> None:
    """Whole numbers are ints, the others finite real numbers: before any comparison can fail on a type."""
    for name in _INTS:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    for name in _FLOATS:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, got {value!r}")
    if settings.steps is not None and (isinstance(settings.steps, bool) or not isinstance(settings.steps, int)):
        raise ArgumentTypeError(
            f"steps must be an integer or None, got {type(settings.steps).__name__} {settings.steps!r}"
        )
    epochs = settings.epochs
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)):
            raise ArgumentTypeError(f"epochs must be a number or None, got {type(epochs).__name__} {epochs!r}")
        if not math.isfinite(epochs):
            raise SettingsError(f"epochs must be a finite number, got {epochs!r}; use e.g. 1")
    for name in ("init", "schedule"):
        if not isinstance(getattr(settings, name), str):
            raise ArgumentTypeError(f"{name} must be a str, got {type(getattr(settings, name)).__name__}")


def _exp(x: float) -> float:
    """exp that gives inf instead of raising OverflowError (a perplexity of a diverged loss)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class StepInfo:
    """What the progress callback is told after each optimizer step.

    Attributes:
        step: steps done (1-based), of ``total_steps``.
        loss: this step's training loss (mean over its label tokens).
        tokens: tokens trained on so far.
        tokens_per_s: tokens per second of training so far (validation time excluded).
        seconds_left: estimated seconds to the last step.
        val_loss: the validation loss, on the steps where it was measured; else None.
    """

    step: int
    total_steps: int
    loss: float
    tokens: int
    tokens_per_s: float
    seconds_left: float
    val_loss: float | None = None


@dataclass(frozen=True)
class TrainReport:
    """What a fine-tune measured.

    Attributes:
        losses: training loss per step, ``(step, loss)``.
        val_losses: validation loss when measured, ``(step, loss)``; step 0 is before training.
        val_loss_before, val_loss_after: validation loss before and after training.
        steps_done, steps_planned: optimizer steps taken and asked for.
        tokens: tokens trained on.
        tokens_per_s: training throughput (validation time excluded).
        train_seconds: time spent in training steps.
        trainable_params: the adapter's parameters.
        stopped: True when stopped early (the adapter holds the steps done).
        data_name: what it was trained on.
        stop_reason: why it stopped early ("" when it ran to the end): a stop request, or a
            loss or weight that was not finite (then the adapter holds the last good step).
        diverged: True when it stopped because a loss, gradient or weight was not finite.
    """

    losses: tuple[tuple[int, float], ...]
    val_losses: tuple[tuple[int, float], ...]
    val_loss_before: float
    val_loss_after: float
    steps_done: int
    steps_planned: int
    tokens: int
    tokens_per_s: float
    train_seconds: float
    trainable_params: int
    stopped: bool
    data_name: str = ""
    stop_reason: str = ""
    diverged: bool = False

    @property
    def perplexity_before(self) -> float:
        return _exp(self.val_loss_before)

    @property
    def perplexity_after(self) -> float:
        return _exp(self.val_loss_after)

    def figures(self) -> dict:
        """The headline numbers as a flat dict (for JSON and model cards)."""
        return {
            "val_loss_before": self.val_loss_before,
            "val_loss_after": self.val_loss_after,
            "perplexity_before": self.perplexity_before,
            "perplexity_after": self.perplexity_after,
            "steps_done": self.steps_done,
            "steps_planned": self.steps_planned,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "train_seconds": self.train_seconds,
            "trainable_params": self.trainable_params,
            "stopped": self.stopped,
            "stop_reason": self.stop_reason,
            "diverged": self.diverged,
            "data": self.data_name,
        }


@dataclass
class TrainControl:
    """Lets another thread stop a fine-tune: ``stop()`` ends it cleanly after the current step."""

    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()
