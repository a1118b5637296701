"""The LoRA fine-tune: PEFT adapters on a copy of the model, trained through Hugging Face Accelerate.

The loop is Accelerate's plain one (``prepare``, ``backward``, ``clip_grad_norm_``), so
``accelerate launch`` runs the same code on GPUs and several processes; here it runs on the CPU.
The model trained is always a copy: the shared loaded model (and a CompressedModel given as
the base) are never changed.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.data.examples import Example, PreparedData, collate
from lowrank_lab.errors import ArgumentTypeError, NonFiniteError, SettingsError
from lowrank_lab.finetune.result import TrainedAdapter
from lowrank_lab.finetune.settings import LoraSettings, StepInfo, TrainControl, TrainReport
from lowrank_lab.finetune.targets import target_modules
from lowrank_lab.loss import mean_next_token_loss
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.progress import ProgressFn
from lowrank_lab.progress import report as tell

StepFn = Callable[[StepInfo], None]
ValidationFn = Callable[[int, float], None]


def lora_config(model: nn.Module, settings: LoraSettings):
    """PEFT's ``LoraConfig`` for ``settings`` on ``model`` (targets resolved to full module names)."""
    from peft import LoraConfig  # heavy (seconds): imported on first use, not with lowrank_lab

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules(model, settings.targets),
        init_lora_weights="pissa" if settings.init == "pissa" else True,
        bias="none",
    )


def _base_copy(base: LoadedModel | CompressedModel) -> nn.Module:
    """A fresh copy of the base's model, with gradients off and the copy's own ties."""
    if isinstance(base, LoadedModel):
        if base.task != "causal-lm":
            raise SettingsError(
                f"{base.title} is an encoder with no language-model head, so it cannot be fine-tuned on text; "
                "choose a causal language model (e.g. smollm2-135m)"
            )
        model = base.copy()
    else:
        model = copy.deepcopy(base.model)
    return model.requires_grad_(False)


def validation_loss(
    model: nn.Module,
    examples: tuple[Example, ...],
    batch_size: int,
    pad_id: int,
    progress: ProgressFn | None = None,
) -> float:
    """Mean next-token loss over every label token of ``examples`` (token-weighted), in eval mode.

    ``progress`` is called as ``progress(examples done, examples, "")`` after each batch.
    """
    batches = [
        collate(list(examples[start : start + batch_size]), pad_id) for start in range(0, len(examples), batch_size)
    ]
    return mean_next_token_loss(model, batches, progress)


def _forever(loader) -> Iterator[dict]:
    while True:
        yield from loader


def _optimizer_and_schedule(model: nn.Module, settings: LoraSettings, total: int):
    from transformers import get_scheduler  # heavy (seconds): imported on first use, not with lowrank_lab

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = get_scheduler(
        settings.schedule, optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=total
    )
    return optimizer, schedule


def _not_finite(step: int, total: int, what: str, value: float | None = None) -> str:
    shown = f" ({value})" if value is not None else ""
    return (
        f"training stopped at step {step} of {total}: the {what}{shown} is not finite (the run diverged); "
        f"the adapter keeps the {step - 1} good step(s) before it. Lower the learning rate (--lr) or alpha (--alpha)"
    )


def _all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def _train(peft_model, data: PreparedData, settings: LoraSettings, on_step: StepFn | None, control: TrainControl):
    """The loop. Returns (losses, val_losses, tokens, train_seconds, steps_done, model unwrapped, stop reason).

    It stops at the first loss, gradient, updated weight or validation loss that is not finite,
    with the adapter as it was after the last good step (an update that made a weight
    non-finite is undone).
    """
    from accelerate import Accelerator  # heavy (seconds): imported on first use, not with lowrank_lab

    total = settings.total_steps(len(data.train))
    val = data.validation[: settings.eval_examples]
    # cpu=True where there is no GPU: under a multi-process launch (accelerate launch --multi_gpu,
    # torchrun) the processes then train together over gloo instead of each training alone.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = torch.utils.data.DataLoader(
        list(data.train),
        batch_size=settings.batch_size,
        shuffle=True,
        collate_fn=partial(collate, pad_id=data.pad_id),
        generator=torch.Generator().manual_seed(settings.seed),
    )
    optimizer, schedule = _optimizer_and_schedule(peft_model, settings, total)
    model, optimizer, loader, schedule = accelerator.prepare(peft_model, optimizer, loader, schedule)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses, val_losses, tokens, seconds, step, reason = [], [], 0, 0.0, 0, ""
    batches = _forever(loader)
    model.train()
    while step < total and not control.stop_requested:
        start = time.perf_counter()
        batch = next(batches)
        loss = model(**batch, use_cache=False).loss  # a KV cache only costs time in training
        if not bool(torch.isfinite(loss)):
            reason = _not_finite(step + 1, total, "training loss", loss.item())
            break
        accelerator.backward(loss)
        if not _all_finite(p.grad for p in trainable):
            optimizer.zero_grad()
            reason = _not_finite(step + 1, total, "gradient")
            break
        if settings.max_grad_norm:
            # The norm squares every gradient: it can overflow while each gradient is finite, and
            # clipping by an infinite norm zeroes the step without a word.
            norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            if norm is not None and not math.isfinite(float(norm)):
                optimizer.zero_grad()
                reason = _not_finite(step + 1, total, "gradient norm", float(norm))
                break
        last_good = [p.detach().clone() for p in trainable]  # LoRA weights are small: a copy per step is cheap
        optimizer.step()
        if not _all_finite(trainable):
            with torch.no_grad():
                for p, good in zip(trainable, last_good):
                    p.copy_(good)
            reason = _not_finite(step + 1, total, "updated adapter weight")
            break
        schedule.step()
        optimizer.zero_grad()
        step, tokens = step + 1, tokens + int(batch["attention_mask"].sum())
        losses.append((step, loss.detach().item()))
        seconds += time.perf_counter() - start
        val_loss = None
        if settings.eval_every and step % settings.eval_every == 0 and step < total:
            val_loss = validation_loss(model, val, settings.batch_size, data.pad_id)
            val_losses.append((step, val_loss))
            model.train()
            if not math.isfinite(val_loss):
                reason = _not_finite(step + 1, total, "validation loss", val_loss)
                break
        if on_step is not None:
            speed = tokens / seconds if seconds else 0.0
            on_step(StepInfo(step, total, losses[-1][1], tokens, speed, seconds / step * (total - step), val_loss))
    if control.stop_requested and not reason:
        reason = f"stopped on request after step {step} of {total}"
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    accelerator.free_memory()
    return losses, val_losses, tokens, seconds, step, unwrapped, reason


def _pissa_as_lora(peft_model, fresh_base: nn.Module, initial_dir: Path):
    """The trained PiSSA adapter rewritten by PEFT as a plain LoRA adapter (rank 2r) on the untouched base."""
    from peft import PeftModel  # heavy (seconds): imported on first use, not with lowrank_lab

    out = initial_dir.parent / "converted"
    peft_model.save_pretrained(str(out), path_initial_model_for_weight_conversion=str(initial_dir))
    return PeftModel.from_pretrained(fresh_base, str(out)).eval()


def check_finetune_args(base, data, settings, on_step, control) -> None:
    """Refuse arguments of the wrong type with a message, before anything is copied or trained."""
    if not isinstance(base, (LoadedModel, CompressedModel)):
        raise ArgumentTypeError(
            f"finetune's base is a LoadedModel (load_model) or a CompressedModel (compress), got {type(base).__name__}"
        )
    if not isinstance(data, PreparedData):
        raise ArgumentTypeError(f"finetune's data comes from lowrank_lab.data.prepare, got {type(data).__name__}")
    if not isinstance(settings, LoraSettings):
        raise ArgumentTypeError(f"finetune's settings are a LoraSettings, got {type(settings).__name__}")
    if on_step is not None and not callable(on_step):
        raise ArgumentTypeError(f"on_step must be a function of a StepInfo, got {type(on_step).__name__}")
    if control is not None and not isinstance(control, TrainControl):
        raise ArgumentTypeError(f"control must be a TrainControl, got {type(control).__name__}")
    if not data.train or not data.validation:
        raise SettingsError(f"{data.name} has no training or no validation examples; prepare more data")


def check_data_fits(model: nn.Module, data: PreparedData) -> None:
    """The examples fit the model: token ids inside its vocabulary, lengths inside its positions."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(embed, "num_embeddings", None)
    top = max(max(e.input_ids, default=0) for e in (*data.train, *data.validation))
    if vocab is not None and top >= vocab:
        raise SettingsError(
            f"{data.name} holds token id {top}, but the model's vocabulary has {vocab} tokens: the data was "
            "tokenized with another model's tokenizer; prepare it with this model's tokenizer"
        )
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    longest = max(len(e.input_ids) for e in (*data.train, *data.validation))
    if isinstance(limit, int) and longest > limit:
        raise SettingsError(
            f"{data.name} has examples of {longest} tokens, but the model reads at most {limit} positions; "
            f"prepare it with max_seq_len {limit} or less (--max-seq-len)"
        )


def check_rank_fits(model: nn.Module, names: list[str], r: int) -> None:
    """Refuse a LoRA rank above what a targeted layer can hold (min(in, out)): the extra rank is void."""
    from transformers.pytorch_utils import Conv1D

    from lowrank_lab.lowrank import LowRankLinear

    for name in names:
        module = model.get_submodule(name)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else None
        if isinstance(parent, LowRankLinear):  # a factor: the adapter adds to the whole layer's map
            name, n_in, n_out = name.rpartition(".")[0], parent.in_features, parent.out_features
        elif isinstance(module, nn.Linear):
            n_in, n_out = module.in_features, module.out_features
        elif isinstance(module, Conv1D):
            n_in, n_out = module.weight.shape
        else:
            continue
        if r > min(n_in, n_out):
            raise SettingsError(
                f"LoRA rank r={r} is above what {name} ({n_in}→{n_out}) can hold, at most {min(n_in, n_out)}; "
                f"use r ≤ {min(n_in, n_out)} (--r), or target other layers (--targets)"
            )


def finetune(
    base: LoadedModel | CompressedModel,
    data: PreparedData,
    settings: LoraSettings,
    on_step: StepFn | None = None,
    control: TrainControl | None = None,
    progress: ProgressFn | None = None,
    on_validation: ValidationFn | None = None,
) -> TrainedAdapter:
    """Train a LoRA adapter on a copy of ``base``.

    Args:
        base: the original model (a LoadedModel) or a compressed one (healing: the adapters
            sit on each factorized layer's thin ``A`` and ``B``). Neither is changed.
        data: tokenized training and validation examples (:func:`lowrank_lab.data.prepare`),
            made with the same tokenizer.
        settings: the LoRA and training settings.
        on_step: called after every optimizer step with a :class:`StepInfo`.
        control: ``control.stop()`` (from any thread) ends training after the current step;
            the adapter keeps what it learned so far and the report says ``stopped``.
        progress: told what happens outside the steps, as ``progress(done, total, message)``:
            preparing the copy, and the validation loss before and after training (per batch).
            An exception it raises (e.g. :class:`~lowrank_lab.errors.Cancelled`) ends the run.
        on_validation: called as ``on_validation(step, loss)`` with the validation loss before
            training (step 0) as soon as it is known, and after training (the last step).

    Returns:
        The adapter (a PEFT model on a copy of the base) with its :class:`TrainReport`.

    Raises:
        ArgumentTypeError: an argument of the wrong type.
        SettingsError: an encoder without a language-model head, unknown target kinds, a rank
            above a targeted layer's, or data longer than the model's positions or tokenized
            with another tokenizer.
        NonFiniteError: the base model's validation loss is already NaN or infinite.
    """
    from accelerate.utils import set_seed  # heavy (seconds): imported on first use, not with lowrank_lab
    from peft import get_peft_model

    check_finetune_args(base, data, settings, on_step, control)
    control = control or TrainControl()
    tell(progress, 0, 1, "copying the model and putting the adapters on it")
    model = _base_copy(base)
    check_data_fits(model, data)
    config = lora_config(model, settings)
    check_rank_fits(model, config.target_modules, settings.r)
    set_seed(settings.seed)
    peft_model = get_peft_model(model, config)
    n_trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    val = data.validation[: settings.eval_examples]
    before = validation_loss(  # LoRA starts as a no-op: this is the base's loss
        peft_model, val, settings.batch_size, data.pad_id, _named(progress, "validation loss before training")
    )
    if not math.isfinite(before):
        from lowrank_lab.evaluate import non_finite_cause

        raise NonFiniteError(
            f"the base model's validation loss is {before} before any training, so there is nothing to fine-tune "
            f"from: {non_finite_cause(model)}"
        )
    if on_validation is not None:
        on_validation(0, before)
    with tempfile.TemporaryDirectory(prefix="lowrank-pissa-") as tmp:
        if settings.init == "pissa":
            peft_model.peft_config["default"].init_lora_weights = True  # saved as a plain adapter
            peft_model.save_pretrained(str(Path(tmp) / "initial"))
        losses, val_losses, tokens, seconds, steps, trained, reason = _train(
            peft_model, data, settings, on_step, control
        )
        if settings.init == "pissa":
            trained = _pissa_as_lora(trained, _base_copy(base), Path(tmp) / "initial")
    after = validation_loss(
        trained, val, settings.batch_size, data.pad_id, _named(progress, "validation loss after training")
    )
    if on_validation is not None:
        on_validation(steps, after)
    report = TrainReport(
        losses=tuple(losses),
        val_losses=((0, before), *val_losses, (steps, after)),
        val_loss_before=before,
        val_loss_after=after,
        steps_done=steps,
        steps_planned=settings.total_steps(len(data.train)),
        tokens=tokens,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        train_seconds=seconds,
        trainable_params=n_trainable,
        stopped=steps < settings.total_steps(len(data.train)),
        data_name=data.name,
        stop_reason=reason,
        diverged="not finite" in reason,
    )
    compressed = base if isinstance(base, CompressedModel) else None
    return TrainedAdapter(
        model=trained,
        tokenizer=base.tokenizer,
        base="compressed" if compressed is not None else "original",
        source=base.source if compressed is not None else base.spec,
        compressed=compressed,
        settings=settings,
        report=report,
    )


def _named(progress: ProgressFn | None, what: str) -> ProgressFn | None:
    """``progress`` with ``what`` and the examples done as its message."""
    if progress is None:
        return None
    return lambda done, total, _: progress(done, total, f"{what}: {done}/{total} examples")
