"""What lowrank_lab knows about linear layers, in one place: ``nn.Linear`` and GPT-2's ``Conv1D``.

Both compute y = W x + b. ``nn.Linear`` stores W out×in; ``Conv1D`` stores it in×out (its
``weight`` is the transpose). Everything that reads a layer's sizes or its weight goes through
here, so the difference is handled once.
"""

from __future__ import annotations

import torch
from torch import nn

try:
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers always ships it
    Conv1D = None


def is_conv1d(module: nn.Module) -> bool:
    """True for GPT-2's ``Conv1D`` (weight stored in×out)."""
    return Conv1D is not None and isinstance(module, Conv1D)


def is_linear(module: nn.Module) -> bool:
    """True for an ``nn.Linear`` or a ``Conv1D``: a layer y = W x + b with a 2-D weight."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_dims(module: nn.Module) -> tuple[int, int, bool] | None:
    """(in, out, has bias) of a Linear or Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, module.bias is not None
    if is_conv1d(module):
        return module.weight.shape[0], module.weight.shape[1], module.bias is not None
    return None


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an out×in view (no copy): Conv1D's in×out weight transposed."""
    w = module.weight.detach()
    return w.t() if is_conv1d(module) else w


def dense_layer(like: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A layer of ``like``'s type (Linear or Conv1D) computing y = weight·x + bias.

    Args:
        like: the architecture's own layer at that place (may sit on the meta device).
        weight: W, (out, in).
        bias: b, (out,), or None; a Conv1D always has a bias, so it is zero then.
    """
    n_out, n_in = weight.shape
    with torch.no_grad():
        if is_conv1d(like):
            layer = Conv1D(n_out, n_in).to(weight.dtype)
            layer.weight.copy_(weight.t())
        else:
            layer = nn.Linear(n_in, n_out, bias=bias is not None, dtype=weight.dtype)
            layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        elif layer.bias is not None:
            layer.bias.zero_()
    return layer
