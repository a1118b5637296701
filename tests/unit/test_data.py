"""The built-in text split, uploads, and token blocks."""

from __future__ import annotations

import pytest

from lowrank_lab import DataError
from lowrank_lab.data import builtin_text, builtin_topics, decode_text_upload, token_blocks


def test_split_is_disjoint_complete_and_deterministic():
    from pydoc_data.topics import topics

    cal, ev = builtin_topics("calibration"), builtin_topics("evaluation")
    assert not set(cal) & set(ev)
    assert set(cal) | set(ev) == set(topics)
    assert (len(cal), len(ev)) == (60, 19)
    assert 80_000 < len(builtin_text("evaluation")) < 100_000
    assert builtin_topics("evaluation") == ev


def test_unknown_split():
    with pytest.raises(DataError, match="calibration, evaluation"):
        builtin_topics("train")


def test_token_blocks(tiny_llama):
    blocks = token_blocks(tiny_llama.tokenizer, builtin_text("evaluation"), 4, 64)
    assert blocks.shape == (4, 64)
    ids = tiny_llama.tokenizer(builtin_text("evaluation"), add_special_tokens=False)["input_ids"]
    assert blocks.flatten().tolist() == ids[:256]  # consecutive, from the start


def test_spread_token_blocks_cover_the_whole_text(tiny_llama):
    text = builtin_text("evaluation")
    ids = tiny_llama.tokenizer(text, add_special_tokens=False)["input_ids"]
    blocks = token_blocks(tiny_llama.tokenizer, text, 4, 64, spread=True)  # (4, 64)
    starts = [next(i for i in range(len(ids)) if ids[i : i + 64] == row) for row in blocks.tolist()]
    assert starts[0] == 0 and len(ids) - 64 - starts[-1] < 4  # first and last 64 tokens of the text
    assert all(b - a >= 64 for a, b in zip(starts, starts[1:]))  # no overlap
    exact = token_blocks(tiny_llama.tokenizer, text, len(ids) // 64, 64, spread=True)
    assert exact.flatten().tolist() == ids[: exact.numel()]  # a text just long enough: consecutive


def test_token_blocks_errors(tiny_llama):
    with pytest.raises(DataError, match="need 6400"):
        token_blocks(tiny_llama.tokenizer, "too short", 100, 64)
    with pytest.raises(DataError, match="no tokenizer"):
        token_blocks(None, "text", 1, 8)
    with pytest.raises(DataError, match="at least 1 sample"):
        token_blocks(tiny_llama.tokenizer, "text", 0, 8)
    few = token_blocks(tiny_llama.tokenizer, builtin_text("evaluation")[:2000], 1000, 64, allow_fewer=True)
    assert 1 <= few.shape[0] < 1000
    with pytest.raises(DataError, match="need 6400"):
        token_blocks(tiny_llama.tokenizer, "too short", 100, 64, spread=True)


def test_decode_text_upload():
    assert decode_text_upload("héllo".encode()) == "héllo"
    assert decode_text_upload("\ufeffbom".encode()) == "bom"
    with pytest.raises(DataError, match="not UTF-8"):
        decode_text_upload("héllo".encode("latin-1"), "notes.txt")
    with pytest.raises(DataError, match="holds no text"):
        decode_text_upload(b"  \n ", "empty.txt")
    with pytest.raises(DataError, match="MiB"):
        decode_text_upload(b"a" * (51 * 2**20), "huge.txt")
