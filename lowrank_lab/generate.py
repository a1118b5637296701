"""Greedy generations for a few prompts, to show side by side what a fine-tune or a compression changed."""

from __future__ import annotations

import torch
from torch import nn

from lowrank_lab.data.examples import prompt_text


def generate(model: nn.Module, tokenizer, prompts: list[str], chat: bool, max_new_tokens: int = 32) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), one prompt at a time.

    Args:
        model: a causal LM (a PEFT model works too); not changed.
        tokenizer: its tokenizer.
        prompts: the prompts.
        chat: format each prompt as a user turn (the chat template) rather than as raw text.
        max_new_tokens: the most tokens to add.
    """
    outputs = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for prompt in prompts:
            text = prompt_text(tokenizer, prompt) if chat else prompt
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)  # (1, T)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
            outputs.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    model.train(was_training)
    return outputs
