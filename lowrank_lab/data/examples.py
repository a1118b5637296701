"""Training data after tokenization: examples of token ids with labels, split and batched.

Plain text is joined (documents separated by the end-of-text token) and cut into blocks of
``max_seq_len`` tokens; every token is a label. A prompt/response pair is formatted with the
tokenizer's chat template when it has one (else ``prompt\\n`` + response + end-of-text) and
only the response tokens are labels (the prompt's are ``-100``, which the loss ignores).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from lowrank_lab.data.sources import Record, RecordStyle, TrainingSource
from lowrank_lab.errors import DataError
from lowrank_lab.loss import IGNORE


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


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def _pair_example(tokenizer, record: Record, max_seq_len: int, name: str) -> Example:
    head, tail = _pair_texts(tokenizer, record.prompt or "", record.text)
    prompt_ids, response_ids = _ids(tokenizer, head), _ids(tokenizer, tail)
    n = len(prompt_ids) + len(response_ids)
    if n > max_seq_len:
        raise DataError(
            f"{name}, {record.where}: prompt and response are {n} tokens, over the maximum sequence length "
            f"{max_seq_len}; shorten that row or raise the maximum sequence length"
        )
    return Example(tuple(prompt_ids + response_ids), (IGNORE,) * len(prompt_ids) + tuple(response_ids))


def _text_examples(tokenizer, records: tuple[Record, ...], max_seq_len: int) -> list[Example]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for record in records:
        ids += _ids(tokenizer, record.text) + eos
    blocks = [ids[i : i + max_seq_len] for i in range(0, len(ids), max_seq_len)]
    if len(blocks) > 1 and len(blocks[-1]) < max_seq_len:
        blocks.pop()  # a short tail would be the one padded block; drop it
    return [Example(tuple(b), tuple(b)) for b in blocks if len(b) >= 2]


def _examples(tokenizer, records: tuple[Record, ...], style: RecordStyle, max_seq_len: int, name: str) -> list[Example]:
    if style == "pairs":
        return [_pair_example(tokenizer, r, max_seq_len, name) for r in records]
    return _text_examples(tokenizer, records, max_seq_len)


def prepare(
    source: TrainingSource, tokenizer, max_seq_len: int, val_fraction: float = 0.1, seed: int = 0
) -> PreparedData:
    """Tokenize a training source and split off validation examples.

    Args:
        source: the records (and held-out records, if it ships them).
        tokenizer: the model's Hugging Face tokenizer.
        max_seq_len: tokens per text block; the most a prompt + response may have.
        val_fraction: the share of examples held out when the source ships no validation set.
        seed: seeds the split (the same seed gives the same split).

    Returns:
        The tokenized, split data.

    Raises:
        DataError: no tokenizer, a row too long, or too little data for a training and a
            validation example.
    """
    if tokenizer is None:
        raise DataError("this model has no tokenizer, so it cannot read training text; load a model that ships one")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction {val_fraction} is not between 0 and 1; use e.g. 0.1")
    train = _examples(tokenizer, source.records, source.style, max_seq_len, source.name)
    if source.validation:
        validation = _examples(tokenizer, source.validation, source.style, max_seq_len, source.name)
    else:
        if len(train) < 2:
            unit = "rows" if source.style == "pairs" else f"blocks of {max_seq_len} tokens"
            raise DataError(
                f"{source.name} gives {len(train)} of the {unit} it needs (at least 2: one to train on, one to "
                "validate on); add more data or lower the maximum sequence length"
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
