"""Writing an extracted LoRA as a PEFT adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.

The config is PEFT's own ``LoraConfig`` (saved by PEFT): every factorized matrix is a target
under its full module name with its rank in ``rank_pattern`` and ``alpha_pattern`` set to the
same rank, so PEFT's scale α/r is 1 and the adapter adds exactly B·A. Modules carried whole go
to ``modules_to_save``. Tensor names follow PEFT's saved layout
(``base_model.model.<module>.lora_A.weight``, ``base_model.model.<module>.<param>`` for a module
saved whole), so ``PeftModel.from_pretrained(base, folder)`` loads it; a test compares them with
the names PEFT itself writes for the same config.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


@dataclass(eq=False)
class AdapterTensors:
    """What goes into the adapter file.

    Attributes:
        factors: module → (B out×r, A r×in), float32.
        whole: module → {parameter name: tensor as the module stores it}, for ``modules_to_save``.
        conv1d: True when a factorized module is GPT-2's ``Conv1D`` (PEFT's ``fan_in_fan_out``).
    """

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    whole: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    conv1d: bool = False

    @property
    def ranks(self) -> dict[str, int]:
        return {name: int(a.shape[0]) for name, (_, a) in self.factors.items()}

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        out = {}
        for name, (b, a) in self.factors.items():
            out[f"{PREFIX}{name}.lora_A.weight"] = a.to(dtype).contiguous()
            out[f"{PREFIX}{name}.lora_B.weight"] = b.to(dtype).contiguous()
        for name, params in self.whole.items():
            for param, t in params.items():
                out[f"{PREFIX}{name}.{param}"] = t.to(dtype).contiguous() if t.is_floating_point() else t
        return out


def lora_config(tensors: AdapterTensors, base_name: str):
    """PEFT's ``LoraConfig`` for the adapter: targets, per-module ranks (α = r), modules saved whole."""
    from peft import LoraConfig

    ranks = tensors.ranks
    common = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    return LoraConfig(
        r=common,
        lora_alpha=common,
        target_modules=sorted(ranks),
        rank_pattern=dict(sorted(ranks.items())),
        alpha_pattern=dict(sorted(ranks.items())),  # α = r everywhere: PEFT adds exactly B·A
        modules_to_save=sorted(tensors.whole) or None,
        fan_in_fan_out=tensors.conv1d,
        lora_dropout=0.0,
        bias="none",
        base_model_name_or_path=base_name,
    )


def write_adapter_files(folder: Path, tensors: AdapterTensors, base_name: str, card: str) -> None:
    """Write config, weights and a README into ``folder`` (an empty, staged folder)."""
    config = lora_config(tensors, base_name)
    config.save_pretrained(str(folder))
    save_file(tensors.state_dict(), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / "README.md").write_text(card, encoding="utf-8")
