"""Greedy generations for a few prompts, to show side by side what a fine-tune or a compression changed."""

from __future__ import annotations

import torch
from torch import nn

from lowrank_lab.data.examples import prompt_text
from lowrank_lab.progress import ProgressFn


class _TokenProgress:
    """A ``StoppingCriteria`` that never stops: it reports each generated token to ``progress``.

    It is how a long generation tells its progress (and how a raised ``Cancelled`` ends it
    between two tokens): ``generate`` calls every stopping criterion once per new token.
    """

    def __init__(self, progress: ProgressFn, done_before: int, total: int, message: str):
        self.progress, self.done_before, self.total, self.message = progress, done_before, total, message
        self.tokens = 0

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self.tokens += 1
        self.progress(self.done_before + self.tokens, self.total, self.message)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def generate(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    chat: bool,
    max_new_tokens: int = 32,
    progress: ProgressFn | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), one prompt at a time.

    Args:
        model: a causal LM (a PEFT model works too); not changed.
        tokenizer: its tokenizer.
        prompts: the prompts.
        chat: format each prompt as a user turn (the chat template) rather than as raw text.
        max_new_tokens: the most tokens to add.
        progress: called as ``progress(tokens so far, prompts × max_new_tokens, message)`` after
            every generated token (a prompt that ends early skips the rest of its share).
    """
    from transformers import StoppingCriteriaList  # heavy (seconds): imported on first use

    outputs = []
    total = len(prompts) * max_new_tokens
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for i, prompt in enumerate(prompts):
                text = prompt_text(tokenizer, prompt) if chat else prompt
                message = f"generating {i + 1}/{len(prompts)}: {_short(prompt)}"
                criteria = None
                if progress is not None:
                    progress(i * max_new_tokens, total, message)
                    criteria = StoppingCriteriaList([_TokenProgress(progress, i * max_new_tokens, total, message)])
                ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)  # (1, T)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id
                    if tokenizer.pad_token_id is not None
                    else tokenizer.eos_token_id,
                    stopping_criteria=criteria,
                )
                outputs.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    finally:  # also when a progress callback ends the work early
        model.train(was_training)
    return outputs


def _short(prompt: str, width: int = 40) -> str:
    """The prompt's first line, cut to ``width`` characters."""
    line = prompt.strip().splitlines()[0] if prompt.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
