"""The LoRA fine-tune: PEFT adapters on a copy of the model, trained through Hugging Face Accelerate.

The loop is Accelerate's plain one (``prepare``, ``backward``, ``clip_grad_norm_``), so
``accelerate launch`` runs the same code on GPUs and several processes; here it runs on the CPU.
The model trained is always a copy: the shared loaded model (and a CompressedModel given as
the base) are never changed.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch import nn

from lowrank_lab.artifacts import CompressedModel, TrainedAdapter
from lowrank_lab.data.examples import IGNORE, Example, PreparedData, collate
from lowrank_lab.errors import SettingsError
from lowrank_lab.finetune.settings import LoraSettings, StepInfo, TrainControl, TrainReport
from lowrank_lab.finetune.targets import target_modules
from lowrank_lab.models import LoadedModel

StepFn = Callable[[StepInfo], None]


def lora_config(model: nn.Module, settings: LoraSettings):
    """PEFT's ``LoraConfig`` for ``settings`` on ``model`` (targets resolved to full module names)."""
    from peft import LoraConfig

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


def validation_loss(model: nn.Module, examples: tuple[Example, ...], batch_size: int, pad_id: int) -> float:
    """Mean next-token loss over every label token of ``examples`` (token-weighted), in eval mode."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]), pad_id)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False)
            logits = logits.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
            labels = batch["labels"][:, 1:].to(device)  # (B, T-1)
            total += float(nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="sum"))
            count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def _forever(loader) -> Iterator[dict]:
    while True:
        yield from loader


def _optimizer_and_schedule(model: nn.Module, settings: LoraSettings, total: int):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = get_scheduler(
        settings.schedule, optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=total
    )
    return optimizer, schedule


def _train(peft_model, data: PreparedData, settings: LoraSettings, on_step: StepFn | None, control: TrainControl):
    """The loop. Returns (losses, val_losses, tokens, train_seconds, steps_done, model unwrapped)."""
    from accelerate import Accelerator

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
    losses, val_losses, tokens, seconds, step = [], [], 0, 0.0, 0
    batches = _forever(loader)
    model.train()
    while step < total and not control.stop_requested:
        start = time.perf_counter()
        batch = next(batches)
        loss = model(**batch, use_cache=False).loss  # a KV cache only costs time in training
        accelerator.backward(loss)
        if settings.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
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
        if on_step is not None:
            speed = tokens / seconds if seconds else 0.0
            on_step(StepInfo(step, total, losses[-1][1], tokens, speed, seconds / step * (total - step), val_loss))
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    accelerator.free_memory()
    return losses, val_losses, tokens, seconds, step, unwrapped


def _pissa_as_lora(peft_model, fresh_base: nn.Module, initial_dir: Path):
    """The trained PiSSA adapter rewritten by PEFT as a plain LoRA adapter (rank 2r) on the untouched base."""
    from peft import PeftModel

    out = initial_dir.parent / "converted"
    peft_model.save_pretrained(str(out), path_initial_model_for_weight_conversion=str(initial_dir))
    return PeftModel.from_pretrained(fresh_base, str(out)).eval()


def finetune(
    base: LoadedModel | CompressedModel,
    data: PreparedData,
    settings: LoraSettings,
    on_step: StepFn | None = None,
    control: TrainControl | None = None,
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

    Returns:
        The adapter (a PEFT model on a copy of the base) with its :class:`TrainReport`.

    Raises:
        SettingsError: an encoder without a language-model head, or unknown target kinds.
    """
    from accelerate.utils import set_seed
    from peft import get_peft_model

    control = control or TrainControl()
    model = _base_copy(base)
    config = lora_config(model, settings)
    set_seed(settings.seed)
    peft_model = get_peft_model(model, config)
    n_trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    val = data.validation[: settings.eval_examples]
    before = validation_loss(peft_model, val, settings.batch_size, data.pad_id)  # LoRA starts as a no-op
    with tempfile.TemporaryDirectory(prefix="lowrank-pissa-") as tmp:
        if settings.init == "pissa":
            peft_model.peft_config["default"].init_lora_weights = True  # saved as a plain adapter
            peft_model.save_pretrained(str(Path(tmp) / "initial"))
        losses, val_losses, tokens, seconds, steps, trained = _train(peft_model, data, settings, on_step, control)
        if settings.init == "pissa":
            trained = _pissa_as_lora(trained, _base_copy(base), Path(tmp) / "initial")
    after = validation_loss(trained, val, settings.batch_size, data.pad_id)
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
