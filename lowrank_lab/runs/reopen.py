"""Loading a stored run's artifacts back: its compressed model, or its adapter on the right base.

What comes back is what the pages pass around (a :class:`CompressedModel`, a
:class:`TrainedAdapter`), so a reopened run serves the LoRA and Export pages like a fresh one.
The shared source model is not changed: an adapter on the original model goes on a copy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lowrank_lab.comparison import Comparison, Generation, ModelFigures
from lowrank_lab.errors import LowrankLabError, RunStoreError
from lowrank_lab.export.adapter import BASE_FOLDER
from lowrank_lab.finetune import LoraSettings, TrainedAdapter, TrainReport
from lowrank_lab.models import CompressedModel, LoadedModel, ParamCounts, factorized_plan, load_compressed
from lowrank_lab.runs.record import ADAPTER, CHECKPOINT, EXPORT, remember
from lowrank_lab.runs.records import Run


def _folder(run: Run, roles: tuple[str, ...]) -> Path:
    """The first of ``roles`` the run has on disk; a clear error when all are gone."""
    row = run.row
    found = [a for a in row.artifacts if a.role in roles]
    for a in found:
        if a.role not in row.missing:
            return Path(a.path)
    if found:
        raise RunStoreError(
            f"run #{row.id}'s {found[0].role} at {found[0].path} was removed; delete the run, or make it again",
            "missing",
        )
    raise RunStoreError(f"run #{row.id} ({row.kind}) saved no {' or '.join(roles)} to reopen", "missing")


def _check_source(run: Run, loaded: LoadedModel) -> None:
    if run.row.model != loaded.spec.source:
        raise RunStoreError(
            f"run #{run.row.id} was made from {run.row.model}, not {loaded.spec.source}; open that model first",
            "unknown",
        )


def reopen_compressed(run: Run, loaded: LoadedModel) -> CompressedModel:
    """A compression run's checkpoint as a :class:`CompressedModel` (same outputs as when it was made).

    Args:
        run: a compression run (from ``RunStore.get``).
        loaded: the run's source model (its tokenizer and spec are reused; it is not changed).

    Raises:
        RunStoreError: not a compression, another source model, or the checkpoint was removed.
        CheckpointError: the checkpoint on disk is damaged.
    """
    if run.row.kind != "compression":
        raise RunStoreError(f"run #{run.row.id} is a {run.row.kind}, not a compression", "unknown")
    _check_source(run, loaded)
    opened = load_compressed(_folder(run, (CHECKPOINT, EXPORT)))
    f = run.figures
    params = opened.params
    if f.get("linear_params_dense") is not None and f.get("params_compressed") == params.compressed:
        params = ParamCounts(params.dense, params.compressed, f["linear_params_dense"], f["linear_params_compressed"])
    compressed = dataclasses.replace(
        opened, source=loaded.spec, tokenizer=loaded.tokenizer or opened.tokenizer, params=params
    )
    remember(compressed, run.row.id)
    return compressed


_MODEL_FIGURES = ("params", "bytes", "perplexity", "latency_ms", "peak_memory_bytes")


def recorded_comparison(run: Run) -> Comparison | None:
    """The comparison a compression run measured, rebuilt from its figures (None when it measured none)."""
    f = run.figures
    sides = []
    for side in ("dense", "compressed"):
        values = {k: f.get(f"{k}_{side}") for k in _MODEL_FIGURES}
        if any(values[k] is None for k in ("params", "bytes", "latency_ms", "peak_memory_bytes")):
            return None
        sides.append(ModelFigures(**values))
    generations = tuple(Generation(g["prompt"], g["dense"], g["compressed"]) for g in f.get("generations", ()))
    return Comparison(sides[0], sides[1], generations, f.get("eval_text", ""), f.get("eval_tokens", 0),
                      f.get("latency_tokens", 0))  # fmt: skip


_REPORT_KEYS = ("val_loss_before", "val_loss_after", "steps_done", "steps_planned", "tokens", "tokens_per_s",
                "train_seconds", "trainable_params", "stopped")  # fmt: skip


def _settings(run: Run) -> LoraSettings | None:
    """The LoRA settings as recorded (None when the run recorded none)."""
    lora = dict(run.settings.get("lora") or {})
    if not lora:
        return None
    if isinstance(lora.get("targets"), list):
        lora["targets"] = tuple(lora["targets"])
    try:
        return LoraSettings(**lora)
    except (TypeError, LowrankLabError) as err:
        raise RunStoreError(
            f"run #{run.row.id} recorded LoRA settings this version cannot read ({err})", "unknown"
        ) from None


def _report(run: Run) -> TrainReport | None:
    """The training report as recorded (None when the run recorded none)."""
    f = run.figures
    if any(f.get(k) is None for k in _REPORT_KEYS):
        return None
    return TrainReport(
        losses=tuple(tuple(x) for x in f.get("losses", ())),
        val_losses=tuple(tuple(x) for x in f.get("val_losses", ())),
        val_loss_before=f["val_loss_before"],
        val_loss_after=f["val_loss_after"],
        steps_done=f["steps_done"],
        steps_planned=f["steps_planned"],
        tokens=f["tokens"],
        tokens_per_s=f["tokens_per_s"],
        train_seconds=f["train_seconds"],
        trainable_params=f["trainable_params"],
        stopped=f["stopped"],
        data_name=f.get("data", ""),
    )


def reopen_adapter(run: Run, loaded: LoadedModel) -> TrainedAdapter:
    """A fine-tune run's adapter on its base: a copy of the original model, or its compressed ``base/``.

    Raises:
        RunStoreError: not a fine-tune, another source model, or the adapter folder was removed.
        CheckpointError: the saved compressed base is damaged.
    """
    from peft import PeftModel  # heavy (seconds): imported on first use, not with lowrank_lab

    if run.row.kind != "finetune":
        raise RunStoreError(f"run #{run.row.id} is a {run.row.kind}, not a fine-tune", "unknown")
    _check_source(run, loaded)
    folder = _folder(run, (ADAPTER, EXPORT))
    on_compressed = run.settings.get("base") == "compressed"
    base = load_compressed(folder / BASE_FOLDER).model if on_compressed else loaded.copy()
    model = PeftModel.from_pretrained(base.requires_grad_(False), str(folder)).eval()
    compressed = None
    recorded = run.settings.get("compressed") or {}
    if on_compressed:
        # The base as the run saved it (inside the PEFT model): for its method, calibration and figures.
        compressed = CompressedModel(
            model=model.get_base_model(),
            tokenizer=loaded.tokenizer,
            source=loaded.spec,
            plan=run.plan or factorized_plan(base),
            method=recorded.get("method", "whitened"),
            calibration=dict(recorded.get("calibration") or {}),
            params=ParamCounts(**recorded["params"]) if recorded.get("params") else None,
        )
    adapter = TrainedAdapter(
        model=model,
        tokenizer=loaded.tokenizer,
        base="compressed" if on_compressed else "original",
        source=loaded.spec,
        compressed=compressed,
        settings=_settings(run),
        report=_report(run),
    )
    remember(adapter, run.row.id)
    return adapter
