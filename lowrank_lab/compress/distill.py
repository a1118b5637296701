"""End-to-end distillation: the compressed model's factors trained to give the dense model's next-token distributions.

The block walk fits each layer, then each block, to the dense model on its own; what is left
is the drift no single block sees (the errors of thirty blocks adding up at the head). A short
distillation closes most of it: every factor (A and B of each :class:`LowRankLinear`) is
trained with Adam to minimise

    KL(p_dense(· | x_<t) ‖ p_compressed(· | x_<t)),  averaged over the tokens of calibration blocks,

the dense model being the teacher. Nothing else moves: dense layers, norms, embeddings and
biases keep their values, and so do the ranks (the budget holds). Matching the teacher's
distributions, not the text's next tokens, restores what the dense model does instead of
fitting the calibration text (the evaluation split is never read).

Measured on smollm2-135m (README, ``bench/compression.py --distill``): 20% of the linear
parameters removed, perplexity 1.31× dense after the block walk and 1.15× after 60 steps of 4
blocks of 256 tokens; 40% removed, 2.27× and 1.59×.

The teacher is the shared loaded model, read under ``torch.no_grad`` (never changed); both
models run one block of tokens at a time, so memory holds one block's logits and graph beside
the two models, the factors' gradients and Adam's two moments (for smollm2-135m at 40%
removed, the command line's peak went from 1.40 to 2.69 GB). The models must fit in memory: a
folder compressed block by block (``--stream``) is not distilled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from lowrank_lab.compress.calibration import CalibrationSettings, calibration_text
from lowrank_lab.data.text import token_blocks
from lowrank_lab.errors import DataError, SettingsError
from lowrank_lab.lowrank import LowRankLinear
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.models.limits import check_seq_len
from lowrank_lab.progress import ProgressFn, report

WARMUP = 0.1  # share of the steps over which the learning rate rises linearly, before the cosine decay
SEED = 0  # the order the calibration blocks are drawn in


@dataclass(frozen=True)
class DistillSettings:
    """How long and how fast to distil (``steps=0``: not at all).

    Attributes:
        steps: Adam steps.
        lr: peak learning rate (warm-up over the first tenth of the steps, cosine decay to 0).
        batch_size: calibration blocks per step (of the calibration ``seq_len`` tokens each).

    Raises:
        SettingsError: a value out of range, naming it.
    """

    steps: int = 0
    lr: float = 1e-4
    batch_size: int = 4

    def __post_init__(self) -> None:
        for what, value, low in (("steps", self.steps, 0), ("batch_size", self.batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingsError(f"distillation {what} must be an integer ≥ {low}, got {value!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and 0 < lr < 1):
            raise SettingsError(f"the distillation learning rate must be a number in (0, 1), got {lr!r}")

    @property
    def active(self) -> bool:
        return self.steps > 0

    def describe(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "batch_size": self.batch_size}


@dataclass(frozen=True)
class DistillReport:
    """What a distillation did.

    Attributes:
        settings: as asked.
        losses: the KL (nats per token) of each step's batch, before its update.
        tokens: tokens trained on (steps taken × batch_size × seq_len).
        distinct_blocks: calibration blocks available (fewer than steps × batch_size: reused in turn).
        seconds: wall time.
        stopped: why it stopped early with the walk's factors put back (a KL that is not finite), or "".
    """

    settings: DistillSettings
    losses: tuple[float, ...]
    tokens: int
    distinct_blocks: int
    seconds: float
    stopped: str = ""

    def to_dict(self) -> dict:
        return self.settings.describe() | {
            "kl_first": self.losses[0] if self.losses else None,
            "kl_last": self.losses[-1] if self.losses else None,
            "losses": list(self.losses),
            "tokens": self.tokens,
            "distinct_blocks": self.distinct_blocks,
            "seconds": self.seconds,
            "stopped": self.stopped or None,
        }


def distill_blocks(loaded: LoadedModel, settings: DistillSettings, calibration: CalibrationSettings) -> torch.Tensor:
    """Every block of ``calibration.seq_len`` tokens the calibration text gives, in a fixed shuffled order.

    Raises:
        DataError: no tokenizer, or fewer blocks than one step's batch (naming both fixes).
    """
    if loaded.tokenizer is None:
        raise DataError(f"{loaded.title} has no tokenizer, so there is no text to distil on; use distillation steps 0")
    text = calibration_text(calibration)
    ids = token_blocks(loaded.tokenizer, text, 1 << 30, calibration.seq_len, allow_fewer=True)
    if ids.shape[0] < settings.batch_size:
        raise DataError(
            f"the calibration text ({calibration.source}) gives {ids.shape[0]} blocks of {calibration.seq_len} tokens, "
            f"and one distillation step takes {settings.batch_size}; lower the distillation batch size (--distill-batch) "
            f"to at most {ids.shape[0]}, shorten the calibration seq_len (--seq-len), or give more calibration text"
        )
    order = torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(SEED))
    return ids[order]


def check_distill(
    loaded: LoadedModel, settings: DistillSettings, calibration: CalibrationSettings
) -> torch.Tensor | None:
    """Everything distillation needs, before any work: a language-model head, float32 weights, enough text.

    Returns:
        The blocks it will train on (:func:`distill_blocks`), None when ``settings`` distil nothing.

    Raises:
        SettingsError, DataError: naming the problem and the fix.
    """
    if not settings.active:
        return None
    check_seq_len(loaded.model, calibration.seq_len, "the calibration seq_len")
    if loaded.task != "causal-lm":
        raise SettingsError(
            f"distillation matches next-token distributions, and {loaded.title} ({loaded.architecture}) is an "
            "encoder with none; use distillation steps 0 (drop --distill)"
        )
    dtype = next(loaded.model.parameters()).dtype
    if dtype != torch.float32:
        raise SettingsError(
            f"distillation trains the factors in float32, and {loaded.title} is loaded in {dtype}; "
            "load it in float32 or use distillation steps 0 (drop --distill)"
        )
    return distill_blocks(loaded, settings, calibration)


def factor_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The A and B factors of every :class:`LowRankLinear` (not their biases), in module order."""
    return [p for m in model.modules() if isinstance(m, LowRankLinear) for p in (m.B.weight, m.A.weight)]


def distill(
    loaded: LoadedModel,
    compressed: CompressedModel,
    settings: DistillSettings,
    calibration: CalibrationSettings | None = None,
    progress: ProgressFn | None = None,
) -> tuple[CompressedModel, DistillReport]:
    """Train ``compressed``'s factors in place to match ``loaded``'s next-token distributions (module docstring).

    Args:
        loaded: the dense model, the teacher (read, never changed).
        compressed: its compressed copy; its factors are updated in place.
        settings: steps, learning rate, batch size.
        calibration: the text (its ``seq_len`` is the block length); default the built-in calibration split.
        progress: called once per step, with the step's KL.

    Returns:
        The compressed model (its ``calibration`` record gains ``distillation``), and the report.
        A step whose KL is not finite stops it: the walk's factors are put back (a copy is kept
        for that), the record is left as it was, and the report says why in ``stopped``.

        A model with no factorized layer is returned as it is, with ``stopped`` saying so.

    Raises:
        SettingsError, DataError: as :func:`check_distill`; SettingsError for 0 steps.
    """
    calibration = calibration or CalibrationSettings()
    ids = check_distill(loaded, settings, calibration)
    if ids is None:
        raise SettingsError("distillation steps are 0, so there is nothing to distil; give steps ≥ 1")
    params = factor_parameters(compressed.model)
    if not params:  # known only after the walk (e.g. every rank at break-even): keep the walk's model
        reason = "the compressed model has no factorized layer, so there was nothing to distil"
        return compressed, DistillReport(settings, (), 0, int(ids.shape[0]), 0.0, reason)
    teacher, student = loaded.model, compressed.model
    frozen = [(p, p.requires_grad) for p in student.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    walked = [p.detach().clone() for p in params]  # put back if the training diverges
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    warmup = max(1, round(WARMUP * settings.steps))

    def rate(step: int) -> float:  # multiple of lr at this step
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, settings.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    was_training = student.training
    student.eval()  # no dropout: the teacher's distributions are matched as the model will run
    losses: list[float] = []
    stopped = ""
    clock = time.perf_counter()
    try:
        for step in range(settings.steps):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for j in range(settings.batch_size):
                row = ids[(step * settings.batch_size + j) % ids.shape[0]].unsqueeze(0)
                with torch.no_grad():
                    target = torch.log_softmax(teacher(input_ids=row, use_cache=False).logits.float(), -1)
                with torch.enable_grad():
                    log_q = torch.log_softmax(student(input_ids=row, use_cache=False).logits.float(), -1)
                    kl = (target.exp() * (target - log_q)).sum(-1).mean() / settings.batch_size
                    kl.backward()
                total += float(kl.detach())
                del target, log_q, kl
            if not math.isfinite(total):
                stopped = (
                    f"distillation diverged at step {step + 1} (the KL is {total}), so the walk's factors were put "
                    f"back; lower the learning rate (now {settings.lr:g}) and distil again"
                )
                with torch.no_grad():
                    for p, w in zip(params, walked):
                        p.copy_(w)
                break
            optimizer.step()
            schedule.step()
            losses.append(total)
            report(progress, step + 1, settings.steps, f"distilling: step {step + 1}/{settings.steps}, KL {total:.4f}")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
            p.grad = None
        student.train(was_training)
    seq_len = int(ids.shape[1])
    result = DistillReport(
        settings,
        tuple(losses),
        len(losses) * settings.batch_size * seq_len,
        int(ids.shape[0]),
        time.perf_counter() - clock,
        stopped,
    )
    if stopped:
        return compressed, result
    record = dict(compressed.calibration) | {"distillation": settings.describe() | {"tokens": result.tokens}}
    return replace(compressed, calibration=record), result
