"""Built-in English prose from CPython's own documentation, and turning text into token blocks.

CPython ships ``pydoc_data.topics``: 79 documentation topics, about 465k characters of real
English prose. We split it by topic into disjoint calibration and evaluation sets with a fixed
hash of each topic's name, so the split is the same on every machine and never leaks text
from one side to the other.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Literal

import torch

from lowrank_lab.data.files import read_user_file
from lowrank_lab.errors import ArgumentTypeError, DataError

Split = Literal["calibration", "evaluation"]
BUILTIN_SPLITS: tuple[Split, ...] = ("calibration", "evaluation")

# One topic in four (by a hash of its name) is held out for evaluation: 19 topics, ~90k chars.
_EVAL_MODULUS = 4


# How reports and model cards name the built-in evaluation text.
BUILTIN_EVAL_SOURCE = "built-in evaluation split (pydoc_data.topics, 19 topics)"


def _is_evaluation_topic(name: str) -> bool:
    return hashlib.sha256(name.encode()).digest()[0] % _EVAL_MODULUS == 0


@lru_cache(maxsize=2)
def builtin_topics(split: Split) -> dict[str, str]:
    """Return the built-in documentation topics of one split, by topic name (sorted).

    Args:
        split: ``"calibration"`` (60 topics, ~375k characters) or ``"evaluation"``
            (19 topics, ~90k characters).

    Raises:
        DataError: ``split`` is not one of the two names.
    """
    if split not in BUILTIN_SPLITS:
        raise DataError(f"unknown built-in split {split!r}; use one of {', '.join(BUILTIN_SPLITS)}")
    from pydoc_data.topics import topics

    want_eval = split == "evaluation"
    return {k: topics[k] for k in sorted(topics) if _is_evaluation_topic(k) == want_eval}


def builtin_text(split: Split) -> str:
    """Return one split of the built-in text as a single string, topics separated by blank lines."""
    return "\n\n".join(builtin_topics(split).values())


MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def decode_text_upload(data: bytes, filename: str = "upload") -> str:
    """Decode an uploaded text file as UTF-8 and check that it holds some text.

    Args:
        data: the file's bytes.
        filename: its name, for messages.

    Raises:
        ArgumentTypeError: ``data`` is not bytes.
        DataError: the file is too large, not UTF-8, binary (it holds NUL bytes), or empty.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ArgumentTypeError(f"an upload is read from bytes, got {type(data).__name__}; pass the file's contents")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(
            f"{filename} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB. "
            "Upload a smaller sample of the text."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{filename} is not UTF-8 text (byte {err.start} is {data[err.start]:#04x}); "
            "save it as UTF-8 and upload it again."
        ) from None
    if "\x00" in text:
        at = text.index("\x00")
        raise DataError(
            f"{filename} looks like a binary file, not text (it holds a NUL byte at character {at}); "
            "give a UTF-8 text file"
        )
    if not text.strip():
        raise DataError(f"{filename} holds no text; upload a file with some prose in it.")
    return text


def read_text_file(path: object, what: str = "text file") -> str:
    """Read a UTF-8 text file from disk with every check a user's file needs.

    Args:
        path: the file.
        what: what it is for, naming the option, e.g. ``"calibration text (--calibration-text)"``.

    Raises:
        ArgumentTypeError: ``path`` is not a path.
        DataError: missing, a folder, a FIFO or device, too large, not UTF-8, binary or empty.
    """
    data = read_user_file(path, what, MAX_UPLOAD_BYTES)
    return decode_text_upload(data, f"{what} {path}")


def token_blocks(
    tokenizer,
    text: str,
    n_samples: int,
    seq_len: int,
    allow_fewer: bool = False,
    spread: bool = False,
    what: str = "the text",
    fix: str = "give more text, or fewer or shorter samples",
) -> torch.Tensor:
    """Tokenize ``text`` and cut it into ``n_samples`` blocks of ``seq_len`` tokens.

    Blocks never overlap and the same text, tokenizer and sizes always give the same blocks.
    By default they are consecutive from the start of the text (perplexity scores the same
    tokens whatever the sample count); with ``spread`` they start at evenly spaced places over
    the whole text, so a few samples of a long text still see all of it (calibration).

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text to cut.
        n_samples: how many blocks; at least 1.
        seq_len: tokens per block; at least 2.
        allow_fewer: return as many whole blocks as the text holds, up to ``n_samples``
            (at least one), instead of failing when it holds fewer.
        spread: start the blocks evenly over the whole text.
        what: the text's name for messages (e.g. ``"calibration text notes.txt"``).
        fix: how to fix too short a text, naming the options (e.g. ``"lower --samples"``).

    Returns:
        Token ids, shape ``(n_samples, seq_len)`` (fewer rows if allowed), dtype int64.

    Raises:
        DataError: the sizes are out of range, there is no tokenizer, or the text is too short.
    """
    if tokenizer is None:
        raise DataError("this model has no tokenizer, so it cannot read text; load a model that ships one.")
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{what} must be a str, got {type(text).__name__}")
    for name, value in (("samples", n_samples), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if n_samples < 1 or seq_len < 2:
        raise DataError(f"need at least 1 sample of at least 2 tokens, got {n_samples} × {seq_len}")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if allow_fewer and len(ids) >= seq_len:
        n_samples = min(n_samples, len(ids) // seq_len)
    need = n_samples * seq_len
    if len(ids) < need:
        raise DataError(f"{what} has {len(ids)} tokens but {n_samples} samples × {seq_len} tokens need {need}; {fix}.")
    if not spread or n_samples == 1:
        return torch.tensor(ids[:need], dtype=torch.long).view(n_samples, seq_len)
    step = (len(ids) - seq_len) // (n_samples - 1)  # ≥ seq_len, since len(ids) ≥ n_samples·seq_len
    return torch.tensor([ids[i * step : i * step + seq_len] for i in range(n_samples)], dtype=torch.long)
