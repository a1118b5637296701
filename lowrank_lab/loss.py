"""The next-token loss, summed over batches: what perplexity, calibration loss and validation loss all are.

Position t of a sequence predicts token t+1, so the last position predicts nothing and the
first token is never a target. Labels of ``IGNORE`` (-100, Hugging Face's and PyTorch's
convention) are skipped, so a prompt's tokens can be left out of the loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from lowrank_lab.progress import ProgressFn, report

IGNORE = -100  # the label the loss skips
# Float32 logits one forward may produce: a batch is scored in slices of rows that fit. The
# logits of a 50k-word vocabulary are 50 MB per 256-token row; a batch of 8 would hold 0.4 GB,
# and twice that with the loss's log-softmax, far more than the model itself.
LOGITS_BYTES = 64 * 2**20


def block_batches(blocks: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Token blocks (samples, seq_len) as batches of ``input_ids`` (every token a target)."""
    return [{"input_ids": blocks[start : start + batch_size]} for start in range(0, blocks.shape[0], batch_size)]


def mean_next_token_loss(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], progress: ProgressFn | None = None
) -> float:
    """Mean negative log-likelihood of every target token over ``batches``, in eval mode, no gradients.

    Args:
        model: a causal LM (returns ``.logits`` of shape (B, T, vocab)); its training mode is
            restored afterwards, its weights are not changed.
        batches: each holds ``input_ids`` (B, T), and may hold ``attention_mask`` (B, T) and
            ``labels`` (B, T) with ``IGNORE`` where no loss is taken (default: the input ids).
        progress: called as ``progress(sequences done, sequences, "")`` after each batch.

    Returns:
        The token-weighted mean loss; NaN when there is no target token.
    """
    batches = list(batches)
    rows = sum(b["input_ids"].shape[0] for b in batches)
    done = 0
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                ids = batch["input_ids"].to(device)  # (B, T)
                mask = batch.get("attention_mask")
                mask = None if mask is None else mask.to(device)
                labels = batch.get("labels", batch["input_ids"])[:, 1:].to(device)  # (B, T-1)
                step = rows_per_forward(model, ids.shape[1])
                for r in range(0, ids.shape[0], step):
                    part = None if mask is None else mask[r : r + step]
                    out = model(input_ids=ids[r : r + step], attention_mask=part, use_cache=False)
                    logits = out.logits[:, :-1].float()  # (b, T-1, vocab)
                    target = labels[r : r + step]
                    total += float(nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="sum"))
                    del out, logits
                count += int((labels != IGNORE).sum())
                done += ids.shape[0]
                report(progress, done, rows, "")
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def rows_per_forward(model: nn.Module, seq_len: int) -> int:
    """How many rows of ``seq_len`` tokens one forward may take for its logits to stay within
    :data:`LOGITS_BYTES` (at least one)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    vocab = int(weight.shape[0]) if weight is not None else int(getattr(model.config, "vocab_size", 0) or 0)
    return max(1, LOGITS_BYTES // max(1, seq_len * vocab * 4))
