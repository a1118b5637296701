"""What a model does: predict the next token (``causal-lm``) or only encode (``encoder``).

One answer for every part of lowrank_lab: from a config's architecture names before the model
exists, from a model, and which transformers auto class builds it.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

Task = Literal["causal-lm", "encoder"]
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def task_of_config(config) -> Task:
    """``causal-lm`` when the config's architectures name a language-model head, else ``encoder``."""
    archs = getattr(config, "architectures", None) or []
    return "causal-lm" if any(a.endswith(_CAUSAL_SUFFIXES) for a in archs) else "encoder"


def task_of_model(model: nn.Module) -> Task:
    """The task of a model: from its config's architectures, else from its class name."""
    archs = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return "causal-lm" if any(a.endswith(_CAUSAL_SUFFIXES) for a in archs) else "encoder"


def has_lm_head(model: nn.Module) -> bool:
    """True when the model has an output head that maps hidden states to token logits."""
    return hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None


def auto_model_class(task: Task):
    """The transformers auto class that builds a model for ``task``."""
    from transformers import AutoModel, AutoModelForCausalLM  # heavy: imported on first use, not with lowrank_lab

    return AutoModelForCausalLM if task == "causal-lm" else AutoModel
