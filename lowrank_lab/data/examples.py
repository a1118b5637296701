"""Training data after tokenization: examples of token ids with labels, split and batched.

Plain text is joined (documents separated by the end-of-text token) and cut into blocks of
``max_seq_len`` tokens; every token is a label. A prompt/response pair is formatted with the
tokenizer's chat template when it has one (else ``prompt\\n`` + response + end-of-text) and
only the response tokens are labels (the prompt's are ``-100``, which the loss ignores).

Tokenization is batched (the fast tokenizers spread a batch over cores) and reports progress,
and the chat template is rendered once with placeholders when that gives the very text each
row would get (checked), so a file at the upload limits prepares in seconds, not minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowrank_lab.data.sources import Record, RecordStyle, TrainingSource
from lowrank_lab.errors import ArgumentTypeError, DataError
from lowrank_lab.loss import IGNORE
from lowrank_lab.progress import ProgressFn, report


@dataclass(frozen=True)
class Example:
    """One sequence: ``input_ids`` and ``labels`` of the same length (labels -100 where no loss)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def n_labels(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Tokenized training and validation examples.

    Attributes:
        name: the source's name.
        style: ``text`` or ``pairs``.
        train, validation: the examples.
        pad_id: the token id used to pad a batch.
        max_seq_len: the longest an example may be.
        demo_prompts: prompts to show generations for, before and after training.
    """

    name: str
    style: RecordStyle
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    pad_id: int
    max_seq_len: int
    demo_prompts: tuple[str, ...] = ()

    @property
    def train_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.train)


def prompt_text(tokenizer, prompt: str) -> str:
    """The text a model sees for ``prompt`` before its answer: the chat template's user turn, or ``prompt\\n``."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt + "\n"


def _pair_texts(tokenizer, prompt: str, response: str) -> tuple[str, str]:
    """(prompt part, response part) whose concatenation is the whole formatted exchange."""
    head = prompt_text(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(head):
            return head, full[len(head) :]
    return head, response + (tokenizer.eos_token or "")


BATCH = 2048  # texts per tokenizer call
_PIECE_CHARS = 1 << 16  # a long text is tokenized in pieces of about this size, cut after a newline

# Placeholders for rendering the chat template once; the spaces and quotes catch a template
# that trims or escapes what it is given (then every row is rendered on its own).
_PROMPT_MARK, _RESPONSE_MARK = " \x00lowrank-prompt\x00 '\" ", " \x00lowrank-response\x00 '\" "


class _Ticker:
    """Progress over all the tokenizer calls of one preparation."""

    def __init__(self, progress: ProgressFn | None, total: int):
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def add(self, n: int) -> None:
        self.done = min(self.done + n, self.total)
        report(self.progress, self.done, self.total, "tokenizing")


def _batch_encoder(tokenizer, probe: list[str]) -> Callable[[list[str]], list[list[int]]]:
    """The fastest way to tokenize a batch that gives the tokenizer's own ids.

    A fast tokenizer's Rust backend skips the Python wrapping of every encoding (a third of
    the time on short rows); it is used when it gives the same ids on ``probe``.
    """

    def wrapped(batch: list[str]) -> list[list[int]]:
        return tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]

    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or not probe:
        return wrapped

    def direct(batch: list[str]) -> list[list[int]]:
        return [e.ids for e in backend.encode_batch(batch, add_special_tokens=False)]

    try:
        return direct if direct(probe) == wrapped(probe) else wrapped
    except Exception:  # a backend that refuses these arguments: the wrapper knows how to call it
        return wrapped


def _ids_many(tokenizer, texts: list[str], ticker: _Ticker) -> list[list[int]]:
    encode = _batch_encoder(tokenizer, texts[:16])
    out: list[list[int]] = []
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        out += encode(batch)
        ticker.add(len(batch))
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def _pieces(text: str) -> list[str]:
    """``text`` cut after newlines into pieces of about ``_PIECE_CHARS`` (one piece when it is short)."""
    if len(text) <= _PIECE_CHARS:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + _PIECE_CHARS)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _pair_formatter(tokenizer) -> Callable[[str, str], tuple[str, str]]:
    """A function (prompt, response) → (prompt part, response part), as :func:`_pair_texts` gives them.

    With a chat template, it is rendered once with placeholders and filled by string
    substitution, when that reproduces the template exactly (checked on the placeholders,
    which hold spaces and quotes, and on a plain pair); otherwise each pair is rendered.
    """
    slow = lambda p, r: _pair_texts(tokenizer, p, r)  # noqa: E731
    if not getattr(tokenizer, "chat_template", None):
        return slow
    try:
        head, tail = _pair_texts(tokenizer, _PROMPT_MARK, _RESPONSE_MARK)
    except Exception:  # a template that rejects the placeholders: render each row
        return slow
    if head.count(_PROMPT_MARK) != 1 or _RESPONSE_MARK in head or tail.count(_RESPONSE_MARK) != 1:
        return slow
    if _PROMPT_MARK in tail:
        return slow

    def fast(prompt: str, response: str) -> tuple[str, str]:
        return head.replace(_PROMPT_MARK, prompt), tail.replace(_RESPONSE_MARK, response)

    probe = ("What is 2 + 2?", "Four.")
    return fast if fast(*probe) == slow(*probe) else slow


def _pair_examples(tokenizer, records: tuple[Record, ...], max_seq_len: int, name: str, ticker) -> list[Example]:
    fmt = _pair_formatter(tokenizer)
    heads, tails = zip(*(fmt(r.prompt or "", r.text) for r in records)) if records else ((), ())
    prompt_ids = _ids_many(tokenizer, list(heads), ticker)
    response_ids = _ids_many(tokenizer, list(tails), ticker)
    examples = []
    for record, p, r in zip(records, prompt_ids, response_ids):
        n = len(p) + len(r)
        if n > max_seq_len:
            raise DataError(
                f"{name}, {record.where}: prompt and response are {n} tokens, over the maximum sequence length "
                f"{max_seq_len}; shorten that row or raise the maximum sequence length (--max-seq-len)"
            )
        examples.append(Example(tuple(p + r), (IGNORE,) * len(p) + tuple(r)))
    return examples


def _text_examples(tokenizer, records: tuple[Record, ...], max_seq_len: int, ticker=None) -> list[Example]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pieces, ends = [], []  # ends[i]: whether piece i closes its record (then an end-of-text follows)
    for record in records:
        parts = _pieces(record.text)
        pieces += parts
        ends += [False] * (len(parts) - 1) + [True]
    ids: list[int] = []
    for piece_ids, last in zip(_ids_many(tokenizer, pieces, ticker or _Ticker(None, len(pieces))), ends):
        ids += piece_ids + (eos if last else [])
    blocks = [ids[i : i + max_seq_len] for i in range(0, len(ids), max_seq_len)]
    if len(blocks) > 1 and len(blocks[-1]) < max_seq_len:
        blocks.pop()  # a short tail would be the one padded block; drop it
    return [Example(tuple(b), tuple(b)) for b in blocks if len(b) >= 2]


def _n_calls(records: tuple[Record, ...], style: RecordStyle) -> int:
    if style == "pairs":
        return 2 * len(records)
    return sum(len(_pieces(r.text)) for r in records)


def _examples(
    tokenizer, records: tuple[Record, ...], style: RecordStyle, max_seq_len: int, name: str, ticker=None
) -> list[Example]:
    ticker = ticker or _Ticker(None, _n_calls(records, style))
    if style == "pairs":
        return _pair_examples(tokenizer, records, max_seq_len, name, ticker)
    return _text_examples(tokenizer, records, max_seq_len, ticker)


def prepare(
    source: TrainingSource,
    tokenizer,
    max_seq_len: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> PreparedData:
    """Tokenize a training source and split off validation examples.

    Args:
        source: the records (and held-out records, if it ships them).
        tokenizer: the model's Hugging Face tokenizer.
        max_seq_len: tokens per text block; the most a prompt + response may have.
        val_fraction: the share of examples held out when the source ships no validation set.
        seed: seeds the split (the same seed gives the same split).
        progress: called as ``progress(done, total, "tokenizing")`` over the tokenizer calls.

    Returns:
        The tokenized, split data.

    Raises:
        ArgumentTypeError: ``source`` is not a TrainingSource, or a size is not an integer.
        DataError: no tokenizer, a row too long, or too little data for a training and a
            validation example.
    """
    _check_prepare_args(source, max_seq_len, val_fraction, seed)
    if tokenizer is None:
        raise DataError("this model has no tokenizer, so it cannot read training text; load a model that ships one")
    ticker = _Ticker(progress, _n_calls(source.records, source.style) + _n_calls(source.validation, source.style))
    train = _examples(tokenizer, source.records, source.style, max_seq_len, source.name, ticker)
    if source.validation:
        validation = _examples(tokenizer, source.validation, source.style, max_seq_len, source.name, ticker)
    else:
        if len(train) < 2:
            unit = "rows" if source.style == "pairs" else f"blocks of {max_seq_len} tokens"
            raise DataError(
                f"{source.name} gives {len(train)} of the {unit} it needs (at least 2: one to train on, one to "
                "validate on); add more data, or lower the maximum sequence length (--max-seq-len)"
            )
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(val_fraction * len(train)))
        held = set(order[:n_val])
        validation = [e for i, e in enumerate(train) if i in held]
        train = [e for i, e in enumerate(train) if i not in held]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return PreparedData(
        source.name, source.style, tuple(train), tuple(validation), pad, max_seq_len, tuple(source.demo_prompts())
    )


def _check_prepare_args(source, max_seq_len, val_fraction, seed) -> None:
    if not isinstance(source, TrainingSource):
        raise ArgumentTypeError(
            f"prepare takes a TrainingSource (from builtin_source, read_upload or source_from_name_or_file), "
            f"got {type(source).__name__}"
        )
    for what, value in (("max_seq_len", max_seq_len), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if max_seq_len < 2:
        raise DataError(f"max_seq_len {max_seq_len} is too short; use at least 8 tokens, e.g. 128")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction {val_fraction!r} is not between 0 and 1; use e.g. 0.1")


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into a batch.

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels``, each (B, T) int64, T the longest example.
    """
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), length), dtype=torch.long)  # (B, T)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
