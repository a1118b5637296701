"""Real artifacts for the export tests: tiny models factorized by truncated SVD, real PEFT adapters.

Compression proper lives in ``lowrank_lab.compress``; these builders make the same kind of
object (LowRankLinear layers from ``torch.linalg.svd``, put in with ``set_submodule``) so the
export tests do not depend on it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lowrank_lab.data import builtin_text, token_blocks
from lowrank_lab.finetune import TrainedAdapter
from lowrank_lab.layers import weight_out_in
from lowrank_lab.lowrank import LowRankLinear, set_submodule
from lowrank_lab.matrices import weight_matrices
from lowrank_lab.models import CompressedModel, LoadedModel
from lowrank_lab.plan import RankPlan
from lowrank_lab.threads import one_lapack_thread


def keep_rank(shape: tuple[int, int], keep: float) -> int:
    """The rank whose factors hold ``keep`` of the dense matrix's parameters: r·(m+n) ≈ keep·m·n."""
    m, n = shape
    return max(1, int(keep * m * n / (m + n)))


def _svd(matrix: torch.Tensor):
    # One thread: on a busy two-core machine torch's thread pool makes a 64×160 SVD take ~0.5 s.
    with one_lapack_thread():
        return torch.linalg.svd(matrix, full_matrices=False)


def factorize(model: nn.Module, keep: float = 0.5, with_head: bool = False) -> RankPlan:
    """Replace every linear layer (and the output head when ``with_head``) by its truncated SVD, in place."""
    names = [w.name for w in weight_matrices(model) if not w.is_embedding]
    if with_head:  # a tied head is listed under the embedding; reach it by its own name
        head = model.get_output_embeddings()
        names.append(next(n for n, m in model.named_modules() if m is head))
    ranks = {}
    for name in names:
        module = model.get_submodule(name)
        weight = weight_out_in(module)  # (out, in); Conv1D stores in×out
        rank = keep_rank(tuple(weight.shape), keep)
        u, s, vh = _svd(weight.detach().double())  # (out, k), (k,), (k, in)
        b, a = (u[:, :rank] * s[:rank]).float(), vh[:rank].float()
        bias = None if module.bias is None else module.bias.detach().clone()
        set_submodule(model, name, LowRankLinear.from_factors(b, a, bias))
        ranks[name] = rank
    return RankPlan(ranks)


def compressed_model(loaded: LoadedModel, keep: float = 0.5, with_head: bool = False) -> CompressedModel:
    """A real CompressedModel of ``loaded`` (a copy; the shared model is untouched)."""
    model = loaded.copy()
    plan = factorize(model, keep, with_head)
    return CompressedModel(
        model=model,
        tokenizer=loaded.tokenizer,
        source=loaded.spec,
        plan=plan,
        method="svd",
        calibration={},
    )


def train_adapter(
    model: nn.Module,
    loaded: LoadedModel,
    targets: list[str],
    compressed: CompressedModel | None = None,
    steps: int = 3,
) -> TrainedAdapter:
    """Put LoRA on ``model`` with PEFT and take a few real AdamW steps on the built-in text."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model.requires_grad_(True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    blocks = token_blocks(loaded.tokenizer, builtin_text("calibration"), 4, 32)  # (4, 32)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=blocks, labels=blocks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    return TrainedAdapter(
        model=peft_model,
        tokenizer=loaded.tokenizer,
        base="compressed" if compressed is not None else "original",
        source=loaded.spec,
        compressed=compressed,
    )


def adapter_on_original(loaded: LoadedModel) -> TrainedAdapter:
    return train_adapter(loaded.copy(), loaded, ["q_proj", "v_proj"])


def adapter_on_compressed(loaded: LoadedModel, keep: float = 0.5) -> TrainedAdapter:
    compressed = compressed_model(loaded, keep)
    # LoRA goes on the thin factors A and B of every LowRankLinear (and the compressed model
    # the adapter refers to stays clean: PEFT changes the model it is given).
    return train_adapter(copy.deepcopy(compressed.model), loaded, ["A", "B"], compressed)


def logits(model: nn.Module, ids: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output on a fixed batch, in float32: logits, or the last hidden state of an encoder."""
    if ids is None:
        ids = torch.arange(2 * 24).reshape(2, 24) % 500 + 4  # (2, 24)
    with torch.no_grad():
        out = model(input_ids=ids)
    value = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return value.float()
