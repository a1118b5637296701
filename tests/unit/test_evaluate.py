"""Perplexity: deterministic, sensible, and clear about models and text it cannot score."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank_lab import DataError, SettingsError
from lowrank_lab.data import builtin_text
from lowrank_lab.evaluate import perplexity


def test_perplexity_matches_a_direct_computation(tiny_llama):
    text = builtin_text("evaluation")
    ppl = perplexity(tiny_llama.model, tiny_llama.tokenizer, text, seq_len=32, max_blocks=3, batch_size=2)
    ids = tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"][: 3 * 32]
    ids = torch.tensor(ids).view(3, 32)
    with torch.no_grad():
        out = tiny_llama.model(input_ids=ids, labels=ids)
    assert ppl == pytest.approx(math.exp(out.loss.item()), rel=1e-5)
    # a random 512-token model is near-uniform: perplexity in the hundreds
    assert 100 < ppl < 2000


def test_a_batch_is_scored_in_slices_whose_logits_fit_the_budget(tiny_llama, monkeypatch):
    """The same perplexity whether a batch runs in one forward or one row at a time."""
    from lowrank_lab import loss

    text = builtin_text("evaluation")
    whole = perplexity(tiny_llama.model, tiny_llama.tokenizer, text, seq_len=32, max_blocks=4, batch_size=4)
    assert loss.rows_per_forward(tiny_llama.model, 32) >= 4  # 512 words: the whole batch fits
    monkeypatch.setattr(loss, "LOGITS_BYTES", 32 * 512 * 4)  # exactly one 32-token row of logits
    assert loss.rows_per_forward(tiny_llama.model, 32) == 1
    sliced = perplexity(tiny_llama.model, tiny_llama.tokenizer, text, seq_len=32, max_blocks=4, batch_size=4)
    assert sliced == pytest.approx(whole, rel=1e-6)


def test_perplexity_refuses_encoders_and_short_text(tiny_bert, tiny_llama):
    with pytest.raises(SettingsError, match="no language-model head"):
        perplexity(tiny_bert.model, tiny_bert.tokenizer, builtin_text("evaluation"))
    with pytest.raises(DataError, match="tokens"):
        perplexity(tiny_llama.model, tiny_llama.tokenizer, "a few words", seq_len=256)


def test_generate_reports_every_token_and_gives_the_same_text(tiny_llama):
    from lowrank_lab.generate import generate

    calls: list[tuple[int, int, str]] = []
    prompts = ["Hello there", "What is"]
    out = generate(tiny_llama.model, tiny_llama.tokenizer, prompts, False, 5, progress=lambda *c: calls.append(c))
    assert out == generate(tiny_llama.model, tiny_llama.tokenizer, prompts, False, 5)
    assert calls[0] == (0, 10, "generating 1/2: Hello there")
    assert (5, 10, "generating 2/2: What is") in calls
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls) and calls[-1][0] <= 10
