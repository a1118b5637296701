"""How much the calibration loss cares about each direction of each layer's output.

A second-order estimate of what truncation costs in loss, not in local output error: with
g_t = ∂L/∂y_t the gradient of the calibration loss at a layer's output for token t, removing
the whitened component σᵢ uᵢ aᵢᵀ changes the output by δy_t = σᵢ uᵢ (aᵢ x_t), and with the
empirical Fisher ΔL ≈ ½ Σ_t (g_tᵀ δy_t)². Since the whitened coordinates aᵢ x_t are
orthonormal over the calibration tokens, the cost of dropping component i is about
σᵢ² · mean_t (uᵢᵀ g_t)² (cross terms dropped). Local error σᵢ² alone ignores that the loss is
far more sensitive to some layers and directions than to others; the gradient supplies that.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lowrank_lab.compress.factorize import Decomposition
from lowrank_lab.loss import block_batches, mean_next_token_loss
from lowrank_lab.progress import ProgressFn, report


def output_fisher(
    model: nn.Module,
    decs: dict[str, Decomposition],
    blocks: torch.Tensor,
    batch_size: int = 2,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """mean_t (uᵢᵀ g_t)² for every component i of every decomposed layer.

    Args:
        model: a copy of the model (hooks are put on it and removed; weights are not changed).
        decs: name → whitened decomposition (its ``u`` is out×k).
        blocks: calibration token ids, (samples, seq_len).
        batch_size: blocks per forward and backward pass.
        progress: called after each batch.

    Returns:
        name → float64 array (k,).
    """
    sums = {name: torch.zeros(d.u.shape[1], dtype=torch.float64) for name, d in decs.items()}
    count = [0]

    def on_output(name):
        u = decs[name].u  # (out, k)

        def grad_hook(g):
            gu = g.reshape(-1, g.shape[-1]).to(u.dtype) @ u  # (tokens, k)
            sums[name] += gu.square().sum(0).double()

        def fn(module, inputs, output):
            if output.requires_grad:
                output.register_hook(grad_hook)

        return fn

    def embed_hook(module, inputs, output):
        return output.detach().requires_grad_(True)  # gradients flow to activations, not weights

    handles = [model.get_submodule(n).register_forward_hook(on_output(n)) for n in decs]
    handles.append(model.get_input_embeddings().register_forward_hook(embed_hook))
    n = blocks.shape[0]
    try:
        with torch.enable_grad():
            for start in range(0, n, batch_size):
                ids = blocks[start : start + batch_size]  # (B, T)
                # The mean over all calibration tokens, so batches add up to one loss.
                loss = model(input_ids=ids, labels=ids).loss * (ids.shape[0] / n)
                loss.backward()
                count[0] += ids[:, 1:].numel()
                report(progress, min(start + batch_size, n), n, "loss gradients")
    finally:
        for h in handles:
            h.remove()
    return {name: (s / max(count[0], 1)).numpy() for name, s in sums.items()}


def calibration_loss(
    model: nn.Module, blocks: torch.Tensor, batch_size: int = 4, progress: ProgressFn | None = None
) -> float:
    """Mean next-token negative log-likelihood of ``model`` on ``blocks`` (samples, seq_len).

    ``progress`` is called as ``progress(blocks done, blocks, "")`` after each batch.
    """
    return mean_next_token_loss(model, block_batches(blocks, batch_size), progress)
