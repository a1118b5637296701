"""Measuring what a model does: perplexity on text.

Perplexity is exp of the mean next-token negative log-likelihood over non-overlapping blocks
of ``seq_len`` tokens cut from the start of the text, so the same text and settings always
score the same tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lowrank_lab.data.text import token_blocks
from lowrank_lab.errors import ArgumentTypeError, NonFiniteError, SettingsError
from lowrank_lab.loss import block_batches, mean_next_token_loss
from lowrank_lab.models.limits import check_seq_len
from lowrank_lab.progress import ProgressFn
from lowrank_lab.tasks import has_lm_head


def perplexity(
    model: nn.Module,
    tokenizer,
    text: str,
    *,
    seq_len: int = 256,
    max_blocks: int | None = 32,
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> float:
    """Perplexity of a causal language model on ``text``.

    Args:
        model: a causal LM (returns ``.logits`` of shape (B, T, vocab)); not changed.
        tokenizer: its tokenizer.
        text: the text to score; needs at least one block of ``seq_len`` tokens.
        seq_len: tokens per block.
        max_blocks: score at most this many blocks (None: as many as the text holds).
        batch_size: blocks per forward pass.
        progress: called as ``progress(done_blocks, total_blocks, "")``.

    Returns:
        exp(mean negative log-likelihood of every predicted token).

    Raises:
        ArgumentTypeError: ``model`` is not a torch module (pass ``loaded.model``).
        SettingsError: the model has no language-model head, or ``seq_len`` is past its positions.
        DataError: no tokenizer, or the text is shorter than one block.
        NonFiniteError: the model's loss is NaN or infinite (damaged weights, or an overflow
            in float16), so it has no perplexity.
    """
    check_lm_head(model)
    check_seq_len(model, seq_len, "the perplexity block length seq_len")
    blocks = eval_blocks(tokenizer, text, seq_len, max_blocks)
    return block_perplexity(model, blocks, batch_size=batch_size, progress=progress)


def eval_blocks(tokenizer, text: str, seq_len: int = 256, max_blocks: int | None = 32) -> torch.Tensor:
    """The blocks :func:`perplexity` scores: consecutive from the start of ``text``, (n_blocks, seq_len) int64.

    Raises:
        DataError: no tokenizer, or the text is shorter than one block.
    """
    return token_blocks(tokenizer, text, max_blocks or 10**9, seq_len, allow_fewer=True)


def block_perplexity(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 8, progress: ProgressFn | None = None
) -> float:
    """Perplexity of a causal language model on token blocks (n_blocks, seq_len) already cut from a text.

    For several models on one text, tokenize once with :func:`eval_blocks` and score each.

    Raises:
        SettingsError: the model has no language-model head, or the blocks are longer than its positions.
        NonFiniteError: the mean loss is NaN or infinite.
    """
    check_lm_head(model)
    check_seq_len(model, blocks.shape[-1], "the perplexity block length seq_len")
    mean = mean_next_token_loss(model, block_batches(blocks, batch_size), progress)
    if not math.isfinite(mean):
        raise NonFiniteError(
            f"the model's loss on the text is {mean}, so it has no perplexity: {non_finite_cause(model)}"
        )
    return math.exp(mean) if mean < 700 else math.inf  # exp(700) ≈ 1e304: past it a float overflows


def non_finite_cause(model: nn.Module) -> str:
    """Why a model's outputs are not finite, in words: damaged weights (named) or an overflow."""
    with torch.no_grad():
        bad = [(name, int((~torch.isfinite(p)).sum())) for name, p in model.named_parameters() if p.is_floating_point()]
    bad = [(name, n) for name, n in bad if n]
    if bad:
        name, n = bad[0]
        return (
            f"{len(bad)} of its weight tensors hold NaN or infinity (first {name}, {n:,} values); the checkpoint "
            "is damaged or came from a diverged run: load a good copy"
        )
    dtype = next(model.parameters()).dtype
    if dtype in (torch.float16, torch.bfloat16):
        return (
            f"its weights are finite but its activations overflow in {str(dtype).removeprefix('torch.')}; use float32"
        )
    return "its weights are finite but its activations overflow; check the weights' scale"


def check_lm_head(model: nn.Module) -> None:
    """Raises ArgumentTypeError for a non-module, SettingsError unless ``model`` has a language-model head."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(
            f"perplexity takes a torch model, got {type(model).__name__}; pass loaded.model (or compressed.model)"
        )
    if not has_lm_head(model):
        raise SettingsError(
            f"{type(model).__name__} has no language-model head, so it has no perplexity; "
            "use a causal language model (e.g. smollm2-135m)"
        )
