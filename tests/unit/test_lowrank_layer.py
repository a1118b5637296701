"""LowRankLinear: full-rank parity with the dense layer, and module replacement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowrank_lab import LowRankLinear
from lowrank_lab.lowrank import set_submodule


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_factors_reproduce_the_dense_layer(bias):
    torch.manual_seed(0)
    dense = nn.Linear(12, 7, bias=bias)
    u, s, vh = torch.linalg.svd(dense.weight.detach(), full_matrices=False)
    layer = LowRankLinear.from_factors(u * s.sqrt(), s.sqrt()[:, None] * vh, dense.bias.detach() if bias else None)
    x = torch.randn(5, 3, 12)
    assert layer.rank == 7
    assert torch.allclose(layer(x), dense(x), atol=1e-5)
    assert torch.allclose(layer.dense_weight(), dense.weight, atol=1e-5)


def test_factors_must_chain():
    with pytest.raises(ValueError, match="do not chain"):
        LowRankLinear.from_factors(torch.zeros(4, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 1"):
        LowRankLinear(4, 4, 0)


def test_set_submodule(tiny_llama):
    model = tiny_llama.copy()
    name = "model.layers.0.mlp.up_proj"
    set_submodule(model, name, LowRankLinear(64, 160, 4, bias=False))
    assert isinstance(model.get_submodule(name), LowRankLinear)
    assert isinstance(tiny_llama.model.get_submodule(name), nn.Linear)  # the shared model is untouched
