"""One uniform view of a model's weight matrices.

Every 2-D weight is listed once, as a :class:`WeightMatrix`: its module name exactly as
``model.named_modules()`` gives it, its kind (the name without the layer prefix, e.g.
``self_attn.q_proj``), its layer index, and the weight viewed out×in whatever the layer
stores (GPT-2's ``Conv1D`` stores in×out). Tied weights (an ``lm_head`` sharing the
embedding) appear once, under the first module that holds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from lowrank_lab.errors import NoWeightMatricesError
from lowrank_lab.layers import is_conv1d

# "model.layers.12.self_attn.q_proj" → prefix "model.layers", layer 12, kind "self_attn.q_proj"
_LAYERED = re.compile(r"^(?P<prefix>.*?)\.(?P<layer>\d+)\.(?P<kind>.+)$")


@dataclass(frozen=True)
class WeightMatrix:
    """One 2-D weight of a model.

    Attributes:
        name: the module's name as ``model.named_modules()`` gives it.
        kind: the name without its layer prefix (``self_attn.q_proj``, ``mlp.c_fc``); the whole
            name for modules outside the repeated layers (``lm_head``).
        layer: the index of the repeated block the module sits in, or None.
        shape: ``(out_features, in_features)``; for embeddings ``(num_embeddings, dim)``.
        module_type: ``Linear``, ``Conv1D`` or ``Embedding``.
        is_embedding: True for token/position embeddings and a head tied to them.
        tied_to: other module names that share this very weight.
        weight: the stored parameter (not a copy); use :meth:`matrix` for the out×in view.
    """

    name: str
    kind: str
    layer: int | None
    shape: tuple[int, int]
    module_type: str
    is_embedding: bool
    tied_to: tuple[str, ...] = ()
    weight: torch.Tensor = field(default=None, compare=False, repr=False)

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def full_rank(self) -> int:
        return min(self.shape)

    def matrix(self) -> torch.Tensor:
        """The weight as an out×in tensor (a view, no copy). Embeddings: one row per token."""
        w = self.weight.detach()
        return w.t() if self.module_type == "Conv1D" else w


def split_name(name: str) -> tuple[int | None, str]:
    """Split a module name into (layer index, kind): ``model.layers.3.mlp.up_proj`` → (3, ``mlp.up_proj``)."""
    m = _LAYERED.match(name)
    if m is None:
        return None, name
    return int(m.group("layer")), m.group("kind")


def weight_matrices(model: nn.Module, include_embeddings: bool = True) -> list[WeightMatrix]:
    """List every 2-D weight of ``model`` once, in module order.

    Args:
        model: any torch module; Linear, Conv1D and Embedding layers are listed.
        include_embeddings: list embeddings (and heads tied to them) too; they are marked
            ``is_embedding`` either way.

    Returns:
        The matrices, tied weights once.

    Raises:
        NoWeightMatricesError: the model has no 2-D weight at all.
    """
    found: dict[int, dict] = {}  # id(parameter) → fields, so a tied weight is listed once
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            module_type = "Embedding"
        elif isinstance(module, nn.Linear):
            module_type = "Linear"
        elif is_conv1d(module):
            module_type = "Conv1D"
        else:
            continue
        weight = module.weight
        if weight is None or weight.dim() != 2:
            continue
        key = id(weight)
        if key in found:
            found[key]["tied_to"].append(name)
            continue
        layer, kind = split_name(name)
        shape = tuple(weight.shape)
        if module_type == "Conv1D":
            shape = shape[::-1]
        found[key] = dict(
            name=name,
            kind=kind,
            layer=layer,
            shape=shape,
            module_type=module_type,
            is_embedding=module_type == "Embedding",
            tied_to=[],
            weight=weight,
        )
    if not found:
        raise NoWeightMatricesError(
            f"{type(model).__name__} has no 2-D weight (no Linear, Conv1D or Embedding layer), "
            "so there is nothing to analyse or compress; load a transformer model"
        )
    out = [WeightMatrix(**{**f, "tied_to": tuple(f["tied_to"])}) for f in found.values()]
    return [m for m in out if include_embeddings or not m.is_embedding]
