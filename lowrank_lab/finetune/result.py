"""What a LoRA fine-tune produces and the Export step consumes: the trained adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from lowrank_lab.finetune.settings import LoraSettings, TrainReport
from lowrank_lab.models import CompressedModel, ModelSpec

Base = Literal["original", "compressed"]


@dataclass(frozen=True, eq=False)
class TrainedAdapter:
    """A LoRA adapter trained on the original or on a compressed model.

    It holds its own model object, never the shared one: fine-tuning works on a copy.

    Attributes:
        model: the PEFT model (base copy + adapter) after training.
        tokenizer: the base model's tokenizer.
        base: ``original`` or ``compressed`` (healing).
        source: the spec of the original model.
        compressed: the compressed model it was trained on, when ``base == "compressed"``.
        settings: the LoRA settings used (None for an adapter trained outside :func:`finetune`).
        report: what training measured (None for an adapter trained outside :func:`finetune`).
    """

    model: nn.Module
    tokenizer: object | None
    base: Base
    source: ModelSpec
    compressed: CompressedModel | None = None
    settings: LoraSettings | None = None
    report: TrainReport | None = None
