"""The factorized layer: a Linear replaced by two thin ones, W ≈ B·A with inner size r."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """``y = B(A(x))``: a rank-r stand-in for an out×in linear layer.

    ``A`` maps in → r (weight r×in, no bias) and ``B`` maps r → out (weight out×r, with the
    original bias), so W ≈ ``B.weight @ A.weight``. Both are plain ``nn.Linear``, so PEFT can
    put LoRA adapters on them (target ``"A"``/``"B"`` or ``"q_proj.A"`` etc.).

    Args:
        in_features, out_features: the dense layer's sizes.
        rank: the inner size r, 1 ≤ r.
        bias: whether ``B`` has a bias.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, dtype=None, device=None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.A = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.B = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    @classmethod
    def from_factors(cls, b: torch.Tensor, a: torch.Tensor, bias: torch.Tensor | None = None) -> LowRankLinear:
        """Build from factors B (out×r) and A (r×in) and an optional bias (out,)."""
        if b.dim() != 2 or a.dim() != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(f"factors do not chain: B {tuple(b.shape)} · A {tuple(a.shape)}")
        layer = cls(a.shape[1], b.shape[0], a.shape[0], bias=bias is not None, dtype=a.dtype, device=a.device)
        with torch.no_grad():
            layer.A.weight.copy_(a)
            layer.B.weight.copy_(b)
            if bias is not None:
                layer.B.bias.copy_(bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))  # (..., in) → (..., r) → (..., out)

    def dense_weight(self) -> torch.Tensor:
        """The product B·A, out×in."""
        return self.B.weight @ self.A.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (as ``named_modules()`` gives it) by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
