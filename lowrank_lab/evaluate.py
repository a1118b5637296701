"""Measuring what a model does: perplexity on text.

Perplexity is exp of the mean next-token negative log-likelihood over non-overlapping blocks
of ``seq_len`` tokens cut from the start of the text, so the same text and settings always
score the same tokens.
"""

from __future__ import annotations

import math

from torch import nn

from lowrank_lab.data.text import token_blocks
from lowrank_lab.errors import SettingsError
from lowrank_lab.loss import block_batches, mean_next_token_loss
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
        SettingsError: the model has no language-model head.
        DataError: no tokenizer, or the text is shorter than one block.
    """
    if not has_lm_head(model):
        raise SettingsError(
            f"{type(model).__name__} has no language-model head, so it has no perplexity; "
            "use a causal language model (e.g. smollm2-135m)"
        )
    blocks = token_blocks(tokenizer, text, max_blocks or 10**9, seq_len, allow_fewer=True)  # (n_blocks, seq_len)
    return math.exp(mean_next_token_loss(model, block_batches(blocks, batch_size), progress))
