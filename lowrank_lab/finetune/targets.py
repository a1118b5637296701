"""Which layers get LoRA adapters: every linear layer but the output head, or chosen targets.

A target is the last part of a layer's name (``model.layers.3.self_attn.q_proj`` → ``q_proj``),
as PEFT's ``target_modules`` matches it; it names that layer in every block.
A factorized layer (:class:`LowRankLinear`) has no weight of its own: its adapters go on its
thin ``A`` (in → r) and ``B`` (r → out) Linears, which is what healing a compressed model means.
"""

from __future__ import annotations

from torch import nn

from lowrank_lab.errors import SettingsError
from lowrank_lab.finetune.settings import ALL_LINEAR
from lowrank_lab.layers import is_linear
from lowrank_lab.lowrank import LowRankLinear


def _layers(model: nn.Module) -> list[tuple[str, str, list[str]]]:
    """(name, target, names of the Linears to adapt) for each adaptable layer, in model order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inside_lowrank = set()
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            inside_lowrank.update((module.A, module.B))
            layers.append((name, name.rpartition(".")[2], [f"{name}.A", f"{name}.B"]))
        elif is_linear(module) and module is not head and module not in inside_lowrank:
            layers.append((name, name.rpartition(".")[2], [name]))
    return layers


def lora_targets(model: nn.Module) -> list[str]:
    """The targets of the adaptable layers in ``model`` (sorted), e.g. ``['down_proj', 'k_proj', ...]``."""
    return sorted({target for _, target, _ in _layers(model)})


def target_modules(model: nn.Module, targets: str | tuple[str, ...]) -> list[str]:
    """Full names of the Linears to put adapters on, as PEFT's ``target_modules`` takes them.

    Args:
        model: the model to adapt (dense or compressed).
        targets: ``"all-linear"`` or a tuple of targets such as ``("q_proj", "v_proj")``.

    Raises:
        SettingsError: a target the model does not have, or nothing to adapt.
    """
    layers = _layers(model)
    known = {target for _, target, _ in layers}
    if targets != ALL_LINEAR:
        unknown = sorted(set(targets) - known)
        if unknown:
            raise SettingsError(
                f"the model has no layers named {', '.join(unknown)}; choose from {', '.join(sorted(known))} "
                f"or {ALL_LINEAR!r}"
            )
    names = [n for _, target, linears in layers if targets == ALL_LINEAR or target in targets for n in linears]
    if not names:
        raise SettingsError(f"{type(model).__name__} has no linear layer to put a LoRA adapter on")
    return names
