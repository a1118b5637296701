"""What dropping each whitened component costs in loss, measured one block at a time.

With g_t = ∂L/∂y_t the gradient of the calibration loss at a layer's output for token t, and
W S = U Σ Vᵀ the layer's whitened SVD (S Sᵀ = XᵀX of its inputs), dropping component i changes
the output by σᵢ uᵢ (vᵢᵀ S⁻¹ x_t); with the empirical Fisher the loss rises by about

    cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)²          (cross terms dropped)

The gradients come from one backward pass that never needs the whole model at once:

1. forward, block by block, keeping what enters every ⌊√n⌋-th block (a checkpoint);
2. the tail (final norm, head, loss) gives ∂L/∂h at the last block's output;
3. backward, block by block from the last: the inputs of a segment's blocks are recomputed
   from its checkpoint; the block runs on its input, its layers' input statistics XᵀX are
   summed and their whitened SVDs taken, then it runs again batch by batch with gradients on,
   hooks project each layer's output gradient onto its uᵢ, and the gradient at the block's
   input goes on to the block below.

Memory is one block, one batch's graph and about 2√n blocks' inputs (tokens × hidden each),
so the same pass works for a model read from a folder block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lowrank_lab.compress.blocks import (
    BlockLayout,
    _Stop,
    capture_block_inputs,
    replayed_blocks,
    run_block,
)
from lowrank_lab.compress.factorize import lapack_thread
from lowrank_lab.compress.refit import PairStats, _svd, whitening
from lowrank_lab.compress.sources import materialize, release
from lowrank_lab.layers import is_linear, weight_out_in
from lowrank_lab.loss import rows_per_forward
from lowrank_lab.progress import ProgressFn, report

_RIDGE = 1e-6  # as small as still positive definite: costs want the exact whitened spectrum


@dataclass(frozen=True)
class LayerCosts:
    """One linear layer's whitened spectrum and the loss cost of dropping each component.

    Attributes:
        sigma: whitened singular values σᵢ, descending, (k,) float64.
        cost: cᵢ = σᵢ² · mean_t (uᵢᵀ g_t)², (k,) float64.
    """

    sigma: np.ndarray
    cost: np.ndarray


def _projections(layers: dict[str, nn.Module], stats: dict[str, PairStats]) -> dict[str, tuple]:
    """name → (σ (k,), U Σ as out×k float32) from each layer's whitened SVD."""
    out = {}
    with lapack_thread():
        for name, module in layers.items():
            s_fac, _ = whitening(stats[name].g, _RIDGE)
            u, s, _ = _svd(weight_out_in(module).float().double() @ s_fac)  # (out,k), (k,)
            out[name] = (s, (u * s).float())
    return out


class _Accumulator:
    """Σ_t (uᵢᵀ g_t)² per layer, from hooks on the layers' outputs during a backward pass.

    The projections may be set after the forward pass that registers the hooks (they are
    read when the gradients arrive).
    """

    def __init__(self, proj: dict[str, tuple]):
        self.proj: dict[str, tuple] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.set(proj)

    def set(self, proj: dict[str, tuple]) -> None:
        self.proj = proj
        self.sums = {n: torch.zeros(p[1].shape[1], dtype=torch.float64, device=p[1].device) for n, p in proj.items()}

    def hook(self, name: str):
        def on_grad(g):
            us = self.proj[name][1]  # (out, k) = U Σ
            g2 = g.reshape(-1, g.shape[-1]).float()  # (tokens, out)
            self.sums[name] += (g2 @ us).square().sum(0).double()  # Σ_t (σᵢ uᵢᵀ g_t)²

        def fn(module, inputs, output):
            if output.requires_grad:
                output.register_hook(on_grad)

        return fn


def _input_stats(root: nn.Module, names: list[str], run) -> dict[str, PairStats]:
    """XᵀX of each named layer's input while ``run()`` executes (layers reading one tensor share)."""
    stats: dict[str, PairStats] = {}
    last: list = [None, None]

    def hook(name):
        def fn(module, args):
            x = args[0]
            if x is last[0]:
                stats[name] = last[1]
                return
            stats[name] = stats.get(name) or PairStats(x.shape[-1], cross=False, device=x.device)
            stats[name].add(x.detach())
            last[:] = [x, stats[name]]

        return fn

    handles = [root.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        run(last)
    finally:
        for h in handles:
            h.remove()
        last[:] = [None, None]
    return stats


def streamed_costs(
    model: nn.Module,
    layout: BlockLayout,
    source,
    batches: list[torch.Tensor],
    names: list[str],
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    every: int | None = None,
) -> dict[str, LayerCosts]:
    """Loss costs of every component of the named linear layers (module docstring).

    Args:
        model: a skeleton whose stem and tail are materialised; blocks are materialised from
            ``source`` one at a time and released again.
        layout: where its blocks are.
        source: the weights.
        batches: calibration token ids, each (batch, seq_len).
        names: the linear layers to cost (in blocks, or outside them, e.g. an untied head).
        device: where the work runs.
        progress: called per block on the way up and on the way down.
        every: keep the inputs of every ``every``-th block on the way up (default ⌊√n⌋).

    Returns:
        name → :class:`LayerCosts`.
    """
    n = layout.count
    total = 2 * n + 1
    wanted = set(names)
    tokens = sum(int(b[:, 1:].numel()) for b in batches)
    inputs = capture_block_inputs(model, layout, batches, device)
    # What enters block k is kept only every `every` blocks (and the last block's output); on
    # the way down a segment's other inputs are recomputed from its first: one more forward per
    # block, and memory for about 2√n blocks' inputs instead of n.
    every = max(1, math.isqrt(n)) if every is None else every
    kept: dict[int, list[torch.Tensor]] = {0: inputs.hidden}
    hidden = inputs.hidden
    for k in range(n):  # 1. up: keep what enters every `every`-th block
        hidden = _forward(model, layout, source, k, hidden, inputs.kwargs, device)
        if (k + 1) % every == 0 or k + 1 == n:
            kept[k + 1] = hidden
        report(progress, k + 1, total, f"loss gradients: block {k + 1}/{n} forward")
    del hidden
    out: dict[str, LayerCosts] = {}
    grads = _tail(model, layout, batches, kept.pop(n), tokens, wanted, out, device)
    report(progress, n + 1, total, "loss gradients: head")
    for k in reversed(range(n)):  # 3. down: costs of block k, gradient at its input
        if k not in kept:  # recompute the segment's inputs from its first block's
            start = k - k % every
            hidden = kept[start]
            for j in range(start, k):
                hidden = _forward(model, layout, source, j, hidden, inputs.kwargs, device)
                kept[j + 1] = hidden
        name = layout.name(k)
        block = materialize(model, name, source).to(device)
        grads = _block_costs(block, name, kept.pop(k), inputs.kwargs, grads, tokens, wanted, out)
        release(model, name)
        report(progress, 2 * n + 1 - k, total, f"loss gradients: block {k + 1}/{n} backward")
    return out


def _forward(model, layout, source, k, hidden, kwargs, device) -> list[torch.Tensor]:
    """Block k's outputs on ``hidden`` (one tensor per batch), the block materialised and freed again."""
    name = layout.name(k)
    block = materialize(model, name, source).to(device)
    with torch.no_grad():
        out = [run_block(block, h, kw) for h, kw in zip(hidden, kwargs)]
    release(model, name)
    return out


def _block_costs(block, prefix, hidden, kwargs, grads, tokens, wanted, out) -> list[torch.Tensor]:
    """One block on the way down: a forward over every batch sums the layers' input statistics
    and gives their whitened SVDs; then each batch runs again with gradients on and backward
    (hooks project the output gradients on the components). One batch's graph at a time: the
    graphs of all batches would hold hundreds of MB for a small model's block."""
    layers = {rel: m for rel, m in block.named_modules() if rel and is_linear(m) and f"{prefix}.{rel}" in wanted}

    def forward_all(last):
        with torch.no_grad():
            for h, kw in zip(hidden, kwargs):
                last[:] = [None, None]
                run_block(block, h, kw)

    acc = _Accumulator(_projections(layers, _input_stats(block, list(layers), forward_all)))
    handles = [layers[n].register_forward_hook(acc.hook(n)) for n in layers]
    below = []
    try:
        for h, kw, g in zip(hidden, kwargs, grads):
            x = h.detach().requires_grad_(True)
            with torch.enable_grad():
                run_block(block, x, kw).backward(g)
            below.append(x.grad.detach())
    finally:
        for handle in handles:
            handle.remove()
    for rel, (s, _) in acc.proj.items():
        out[f"{prefix}.{rel}"] = LayerCosts(s.cpu().numpy().copy(), (acc.sums[rel] / tokens).cpu().numpy())
    return below


def _tail(model, layout, batches, hidden, tokens, wanted, out, device) -> list[torch.Tensor]:
    """∂L/∂h at the last block's output (L the mean next-token loss over every batch); costs of
    planned layers outside the blocks (an untied head) on the way."""
    outside = sorted(n for n in wanted if layout.block_of(n) is None)
    grads = []
    with replayed_blocks(model, layout) as replay:

        def forward_all(last):
            with torch.no_grad():
                for ids, h in zip(batches, hidden):
                    last[:] = [None, None]
                    replay(h)
                    try:
                        model(input_ids=ids.to(device), use_cache=False)
                    except _Stop:
                        pass

        proj = {}
        if outside:
            layers = {n: model.get_submodule(n) for n in outside}
            stats = _input_stats(model, outside, forward_all)
            proj = _projections(layers, stats)
        acc = _Accumulator(proj)
        handles = [model.get_submodule(n).register_forward_hook(acc.hook(n)) for n in proj]
        try:
            with torch.enable_grad():
                for ids, h in zip(batches, hidden):
                    ids = ids.to(device)
                    step = rows_per_forward(model, ids.shape[1])  # the logits' graph of a few rows at a time
                    parts = []
                    for r in range(0, ids.shape[0], step):
                        x = h[r : r + step].detach().requires_grad_(True)
                        replay(x)
                        part = ids[r : r + step]
                        loss = model(input_ids=part, labels=part, use_cache=False).loss
                        (loss * (part[:, 1:].numel() / tokens)).backward()  # the mean over every token
                        parts.append(x.grad.detach())
                    grads.append(torch.cat(parts))
        finally:
            for handle in handles:
                handle.remove()
    for name, (s, _) in proj.items():
        out[name] = LayerCosts(s.cpu().numpy().copy(), (acc.sums[name] / tokens).cpu().numpy())
    return grads


def streamed_spectra(
    model: nn.Module,
    layout: BlockLayout,
    source,
    batches: list[torch.Tensor],
    names: list[str],
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Whitened singular values of the named linear layers, forward only, one block at a time.

    σᵢ² is the squared output error, summed over the calibration tokens, of dropping component i
    (the data-aware counterpart of the weight spectrum). Needs no loss, so encoders work too.

    Returns:
        name → σ (k,) float64, descending.
    """
    n = layout.count
    wanted = set(names)
    inputs = capture_block_inputs(model, layout, batches, device)
    hidden = inputs.hidden
    out: dict[str, np.ndarray] = {}
    for k in range(n):
        name = layout.name(k)
        block = materialize(model, name, source).to(device)
        layers = {rel: m for rel, m in block.named_modules() if rel and is_linear(m) and f"{name}.{rel}" in wanted}
        nxt: list[torch.Tensor] = []

        def forward_all(last, block=block, nxt=nxt, hidden=hidden):
            with torch.no_grad():
                for h, kw in zip(hidden, inputs.kwargs):
                    last[:] = [None, None]
                    nxt.append(run_block(block, h, kw))

        stats = _input_stats(block, list(layers), forward_all)
        with lapack_thread():
            for rel, module in layers.items():
                out[f"{name}.{rel}"] = _whitened_values(weight_out_in(module).float().double(), stats[rel])
        release(model, name)
        hidden = nxt
        report(progress, k + 1, n + 1, f"whitened spectra: block {k + 1}/{n}")
    outside = sorted(n_ for n_ in wanted if layout.block_of(n_) is None)
    if outside:
        with replayed_blocks(model, layout) as replay:

            def forward_tail(last):
                with torch.no_grad():
                    for ids, h in zip(batches, hidden):
                        last[:] = [None, None]
                        replay(h)
                        model(input_ids=ids.to(device), use_cache=False)

            stats = _input_stats(model, outside, forward_tail)
        with lapack_thread():
            for name in outside:
                out[name] = _whitened_values(weight_out_in(model.get_submodule(name)).float().double(), stats[name])
    report(progress, n + 1, n + 1, "whitened spectra")
    return out


def _whitened_values(w: torch.Tensor, stats: PairStats) -> np.ndarray:
    """Singular values of W S (S Sᵀ = XᵀX + λI), from the eigenvalues of the smaller Gram matrix."""
    s_fac, _ = whitening(stats.g, _RIDGE)
    m = w @ s_fac  # (out, in)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    vals = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
    return vals.sqrt().cpu().numpy()
