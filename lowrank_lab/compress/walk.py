"""Running the engine on a model: in memory (the result is a model) or from a folder to a folder.

In memory, the compressed model is built on a skeleton that receives copies of the loaded
model's tensors block by block: the shared model is read, never changed, and never copied whole.
From a folder, each block is read from the safetensors shards, compressed, written to the
output shards and freed, so memory holds one block: the embeddings and the head are freed once
the first block's inputs are captured and read again after the last block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lowrank_lab.checkpoint.format import alias_map
from lowrank_lab.compress.blocks import BlockLayout, block_layout, capture_block_inputs, replayed_blocks, run_block
from lowrank_lab.compress.engine import EngineSettings, Walk, move_outside_blocks
from lowrank_lab.compress.sources import check_names, materialize_outside, release, skeleton
from lowrank_lab.compress.writer import ShardWriter
from lowrank_lab.loss import rows_per_forward
from lowrank_lab.progress import ProgressFn


def batches_of(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Token blocks (samples, seq_len) cut into batches."""
    return [ids[i : i + batch_size] for i in range(0, ids.shape[0], batch_size)]


def prepared_skeleton(source, device: torch.device) -> tuple[nn.Module, BlockLayout]:
    """The source's model with its stem and tail filled (float32) and its blocks still empty."""
    model = skeleton(source)
    check_names(model, source)
    layout = block_layout(model)
    materialize_outside(model, layout.prefix, source)
    move_outside_blocks(model, layout, device)
    return model, layout


def walk_plans_to_memory(
    source,
    plans: Sequence[dict[str, int]],
    method: str,
    ids: torch.Tensor | None,
    settings: EngineSettings,
    device: torch.device,
    dtype: torch.dtype,
    progress: ProgressFn | None = None,
) -> list[nn.Module]:
    """Compress the whole model once per plan and keep each: finished blocks are cast to ``dtype`` on the CPU.

    Args:
        source: the weights (a :class:`~lowrank_lab.compress.sources.MemorySource` usually).
        plans: one dict of module name → rank (the layers to factorize) per model wanted.
        method: ``svd``, ``whitened`` or ``pca``.
        ids: calibration token ids (samples, seq_len); None for ``svd``.
        settings: the engine's settings.
        device: where the block work runs.
        dtype: the dtype of the returned models.
        progress: called per block.

    Returns:
        One compressed model per plan, in order, on the CPU, eval mode, gradients off.

    With more than one plan the walk must calibrate on the dense model's activations
    (``settings.sequential`` off): every plan then sees the same inputs, so each block runs and
    each layer is decomposed once, and only the truncations differ.
    """
    skeletons = [prepared_skeleton(source, device) for _ in plans]
    model, layout = skeletons[0]
    batches = [] if ids is None else batches_of(ids, settings.batch_size)

    def keep(model: nn.Module, prefix: str) -> None:
        model.get_submodule(prefix).to(device="cpu", dtype=dtype)

    variants = [(other, ranks) for (other, _), ranks in zip(skeletons[1:], plans[1:])]
    Walk(model, layout, source, plans[0], method, settings, device, variants).run(batches, keep, progress)
    models = [m for m, _ in skeletons]
    for m in models:
        m.to(device="cpu", dtype=dtype)
        m.eval()
        m.requires_grad_(False)
    return models


def walk_plans_scored(
    source,
    plans: Sequence[dict[str, int]],
    method: str,
    ids: torch.Tensor | None,
    settings: EngineSettings,
    device: torch.device,
    score_ids: torch.Tensor,
    score_batch: int = 2,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Each plan's mean next-token loss on ``score_ids``, compressed in one walk; no model is kept.

    As :func:`walk_plans_to_memory` (several plans need ``settings.sequential`` off), but as soon
    as block k is compressed for a plan, the plan's scoring stream (``score_ids`` through its
    compressed blocks 0..k−1) goes through it and the block is freed; after the last block the
    tail (final norm, head) gives the loss, token-weighted over every batch as
    :func:`lowrank_lab.loss.mean_next_token_loss` computes it. Memory holds one block per plan and
    the streams (score tokens × hidden each), not the compressed models; the plans' skeletons
    share one copy of the tensors outside the blocks (an untied head a plan factorizes is
    replaced in that skeleton only). The blocks run in float32.

    Returns:
        One loss (nats per token) per plan, in order.
    """
    model, layout = prepared_skeleton(source, device)
    models = [model] + [_sharing_skeleton(source, model) for _ in plans[1:]]
    batches = [] if ids is None else batches_of(ids, settings.batch_size)
    scoring = batches_of(score_ids, score_batch)
    start = capture_block_inputs(model, layout, scoring, device)
    streams = {id(m): list(start.hidden) for m in models}

    def advance(model: nn.Module, prefix: str) -> None:
        block = model.get_submodule(prefix)
        with torch.no_grad():
            streams[id(model)] = [run_block(block, h, kw) for h, kw in zip(streams[id(model)], start.kwargs)]
        release(model, prefix)

    variants = list(zip(models[1:], plans[1:]))
    Walk(model, layout, source, plans[0], method, settings, device, variants).run(batches, advance, progress)
    return [_tail_loss(m, layout, scoring, streams[id(m)], device) for m in models]


def _sharing_skeleton(source, first: nn.Module) -> nn.Module:
    """Another skeleton of the source whose tensors outside the blocks are ``first``'s own (not copies)."""
    model = skeleton(source)
    layout = block_layout(model)
    head = layout.prefix + "."
    for name, module in first.named_modules():
        if name == layout.prefix or name.startswith(head):
            continue
        target = model.get_submodule(name)
        for key, param in module._parameters.items():
            if param is not None:
                target._parameters[key] = param
        for key, buf in module._buffers.items():
            if buf is not None:
                target._buffers[key] = buf
    return model


def _tail_loss(model, layout, batches, hidden, device) -> float:
    """Mean next-token loss from the last block's outputs ``hidden`` (one tensor per batch)."""
    total, count = 0.0, 0
    with torch.no_grad(), replayed_blocks(model, layout) as replay:
        for ids, h in zip(batches, hidden):
            ids = ids.to(device)
            step = rows_per_forward(model, ids.shape[1])  # the logits of a few rows at a time
            for r in range(0, ids.shape[0], step):
                part = ids[r : r + step]
                replay(h[r : r + step])
                logits = model(input_ids=part, use_cache=False).logits[:, :-1].float()
                total += float(nn.functional.cross_entropy(logits.transpose(1, 2), part[:, 1:], reduction="sum"))
                count += int(part[:, 1:].numel())
                del logits
    return total / count if count else math.nan


def walk_to_folder(
    source,
    ranks: dict[str, int],
    method: str,
    ids: torch.Tensor | None,
    settings: EngineSettings,
    device: torch.device,
    writer: ShardWriter,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """Compress the model block by block into ``writer``; returns the skeleton (factorized, on meta).

    Each block is written as soon as it is compressed and then freed; the tensors outside the
    blocks are freed while the blocks run, read again and written at the end. The returned
    skeleton knows every factorized layer's rank and bias (for the checkpoint's config) but
    holds no weights.
    """
    model, layout = prepared_skeleton(source, device)
    batches = [] if ids is None else batches_of(ids, settings.batch_size)

    def write(model: nn.Module, prefix: str) -> None:
        block = model.get_submodule(prefix)
        writer.add({f"{prefix}.{k}": v for k, v in block.state_dict().items()})
        release(model, prefix)

    Walk(model, layout, source, ranks, method, settings, device, free_outside=True).run(batches, write, progress)
    writer.add(_tensors_outside(model, layout))
    _release_all(model)
    return model


def _tensors_outside(model: nn.Module, layout: BlockLayout) -> dict[str, torch.Tensor]:
    """The tensors outside the blocks, tied ones once (under their first name)."""
    state = model.state_dict(keep_vars=True)
    aliases = alias_map(state)
    head = layout.prefix + "."
    return {n: t.detach() for n, t in state.items() if not n.startswith(head) and aliases[n] == n}


def _release_all(model: nn.Module) -> None:
    """Every parameter back to the meta device (shapes and ties stay; memory goes)."""
    empty: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None and not param.is_meta:
                if id(param) not in empty:
                    empty[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False)
                module._parameters[key] = empty[id(param)]
