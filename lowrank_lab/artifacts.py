"""What the steps produce and the Export step consumes: a compressed model, a trained adapter.

Both hold their own model object, never the shared one: compression works on a copy of the
loaded model, fine-tuning on a copy or a fresh load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from lowrank_lab.models.spec import ModelSpec
from lowrank_lab.plan import RankPlan

Method = Literal["svd", "whitened", "pca"]
METHODS: tuple[Method, ...] = ("svd", "whitened", "pca")


@dataclass(eq=False)
class CompressedModel:
    """A model whose planned Linear layers are :class:`~lowrank_lab.lowrank.LowRankLinear`.

    Attributes:
        model: the compressed copy (the shared model is untouched).
        tokenizer: the source model's tokenizer (may be None).
        source: the spec of the model it was made from.
        plan: the ranks actually factorized (module name → rank); other layers are dense.
        method: ``svd``, ``whitened`` or ``pca``.
        calibration: how it was calibrated, in words and numbers (e.g. ``{"text": "built-in
            pydoc_data calibration split", "samples": 32, "seq_len": 256}``); empty for ``svd``.
        figures: measured results (parameters before/after, perplexity before/after, ...),
            filled by evaluation; written into the checkpoint's model card.
    """

    model: nn.Module
    tokenizer: object | None
    source: ModelSpec
    plan: RankPlan
    method: Method
    calibration: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


@dataclass(eq=False)
class TrainedAdapter:
    """A LoRA adapter trained on the original or on a compressed model.

    Attributes:
        model: the PEFT model (base copy + adapter) after training.
        tokenizer: the base model's tokenizer.
        base: ``original`` or ``compressed`` (healing).
        source: the spec of the original model.
        compressed: the compressed model it was trained on, when ``base == "compressed"``.
        settings: the LoRA settings used (a ``LoraSettings``).
        report: what training measured (a ``TrainReport``).
    """

    model: nn.Module
    tokenizer: object | None
    base: Literal["original", "compressed"]
    source: ModelSpec
    compressed: CompressedModel | None = None
    settings: object = None
    report: object = None
