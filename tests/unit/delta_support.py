"""Tuned twins of tiny models for the comparison and extraction tests: real PEFT LoRA merges."""

from __future__ import annotations

import torch
from torch import nn


def lora_merged(model: nn.Module, r: int, targets, scale: float = 0.02, seed: int = 1) -> nn.Module:
    """A copy of ``model`` with a rank-``r`` PEFT LoRA merged into ``targets``.

    PEFT's random initialisation (``init_lora_weights=False``) makes both factors non-zero, so
    every target's ΔW = scale·B·A has rank exactly r; ``scale`` (α/r) keeps the change small
    next to the weights, as a fine-tune's is.
    """
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=scale * r, target_modules=list(targets), init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), config).merge_and_unload()


def logits(model: nn.Module, seed: int = 0, batch: int = 2, length: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 500, (batch, length), generator=g)
    with torch.no_grad():
        return model(input_ids=ids).logits.double()
