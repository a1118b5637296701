"""Training data: the built-in sets, uploads (.txt, .jsonl, .csv), tokenization, and every bad file."""

from __future__ import annotations

import json

import pytest

from lowrank_lab.data import (
    BUILTIN_DATASETS,
    builtin_source,
    collate,
    instruction_pairs,
    number_in_words,
    prepare,
    read_upload,
    source_from_name_or_file,
)
from lowrank_lab.data.examples import IGNORE
from lowrank_lab.data.sources import MAX_ROW_CHARS, MAX_TRAINING_UPLOAD_BYTES
from lowrank_lab.errors import DataError


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (105, "one hundred five"),
        (4127, "four thousand one hundred twenty-seven"),
        (20000, "twenty thousand"),
        (110011, "one hundred ten thousand eleven"),
        (999999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
    ],
)
def test_number_in_words(n, words):
    assert number_in_words(n) == words


def test_instruction_pairs_are_deterministic_and_distinct():
    pairs = instruction_pairs(300, seed=0)
    assert pairs == instruction_pairs(300, seed=0) and pairs != instruction_pairs(300, seed=1)
    assert len({p for p, _ in pairs}) == 300
    assert pairs[1][0].startswith("Write the number in English words: ")


def test_builtin_sets_hold_out_their_own_validation():
    domain, numbers = builtin_source("domain-text"), builtin_source("number-words")
    assert set(BUILTIN_DATASETS) == {"domain-text", "number-words"}
    assert domain.style == "text" and len(domain.validation) == 19  # the evaluation topics
    assert {r.text for r in domain.records}.isdisjoint(r.text for r in domain.validation)
    assert numbers.style == "pairs" and len(numbers.records) == 400 and len(numbers.validation) == 40
    assert {r.prompt for r in numbers.records}.isdisjoint(r.prompt for r in numbers.validation)
    assert numbers.demo_prompts(2) == [r.prompt for r in numbers.validation[:2]]
    with pytest.raises(DataError, match="domain-text"):
        builtin_source("nope")


def test_pairs_are_chat_formatted_and_only_the_response_is_a_label(tiny_llama):
    data = prepare(builtin_source("number-words"), tiny_llama.tokenizer, max_seq_len=128)
    tok = tiny_llama.tokenizer
    example = data.train[0]
    labelled = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
    record = builtin_source("number-words").records[0]
    assert tok.decode(labelled).startswith(record.text + "<|im_end|>")
    assert tok.decode(example.input_ids).startswith("<|im_start|>user\n" + record.prompt)
    assert len(data.train) == 400 and len(data.validation) == 40


def test_text_is_cut_into_full_blocks_and_batches_pad_with_ignored_labels(tiny_llama):
    data = prepare(builtin_source("domain-text"), tiny_llama.tokenizer, max_seq_len=32)
    assert {len(e.input_ids) for e in data.train} == {32}
    assert all(e.labels == e.input_ids for e in data.train[:5])
    short = prepare(builtin_source("number-words"), tiny_llama.tokenizer, max_seq_len=128)
    batch = collate(list(short.train[:3]), short.pad_id)
    lengths = [len(e.input_ids) for e in short.train[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_uploads_of_each_format_read_and_split(tiny_llama):
    txt = read_upload(("Some prose about sorting lists. " * 400).encode(), "notes.txt")
    assert txt.style == "text" and txt.preview(1)[0]["text"].startswith("Some prose")
    rows = [{"prompt": f"Q{i}?", "response": f"A{i}."} for i in range(20)]
    jsonl = read_upload("\n".join(json.dumps(r) for r in rows).encode(), "qa.jsonl")
    assert jsonl.style == "pairs"
    assert jsonl.preview(2) == [{"prompt": "Q0?", "response": "A0."}, {"prompt": "Q1?", "response": "A1."}]
    csv_text = "text,other\n" + "\n".join(f'"line {i}, quoted",x' for i in range(10))
    table = read_upload(csv_text.encode(), "t.csv")
    assert table.style == "text" and table.records[0].text == "line 0, quoted" and table.records[3].where == "row 5"
    split = prepare(jsonl, tiny_llama.tokenizer, 64, val_fraction=0.2, seed=3)
    again = prepare(jsonl, tiny_llama.tokenizer, 64, val_fraction=0.2, seed=3)
    assert len(split.train) == 16 and len(split.validation) == 4
    assert split.validation == again.validation
    assert set(split.validation).isdisjoint(split.train)
    blocks = prepare(txt, tiny_llama.tokenizer, 64)
    assert len(blocks.train) >= 9 and len(blocks.validation) >= 1


BAD_UPLOADS = [
    (b"", "a.txt", "holds no text"),
    (b"   \n\n", "a.jsonl", "holds no text"),
    ("caf\xe9 au lait".encode("latin-1"), "a.txt", "not UTF-8"),
    (b'{"text": "ok"}\n{"text": "broken\n', "a.jsonl", "line 2: not valid JSON"),
    (b'{"text": "ok"}\n["a list"]\n', "a.jsonl", "line 2: a JSON list"),
    (b"question,answer\nq,a\n", "a.csv", "no 'text' column"),
    (b'{"prompt": "p", "response": ""}\n', "a.jsonl", "line 1: 'response' is missing or empty"),
    (json.dumps({"text": "x" * (MAX_ROW_CHARS + 1)}).encode(), "a.jsonl", "line 1: 'text' has 20,001 characters"),
    (b"x" * (MAX_TRAINING_UPLOAD_BYTES + 1), "a.txt", "limited to 10 MiB"),
    (b"text\nhello\n", "a.parquet", "cannot read .parquet"),
    (b"text\n", "a.csv", "holds no rows"),
]


@pytest.mark.parametrize(("data", "name", "message"), BAD_UPLOADS, ids=[m for _, _, m in BAD_UPLOADS])
def test_bad_uploads_name_the_problem(data, name, message):
    with pytest.raises(DataError, match=message) as err:
        read_upload(data, name)
    assert name in str(err.value)


def test_a_row_over_the_sequence_length_and_too_little_text_are_data_errors(tiny_llama):
    rows = [{"prompt": "short", "response": "ok"}, {"prompt": "long " * 200, "response": "r"}]
    source = read_upload("\n".join(json.dumps(r) for r in rows).encode(), "qa.jsonl")
    with pytest.raises(DataError, match=r"qa.jsonl, line 2: prompt and response are \d+ tokens"):
        prepare(source, tiny_llama.tokenizer, 64)
    tiny = read_upload(b"just a few words", "tiny.txt")
    with pytest.raises(DataError, match="tiny.txt gives 1 of the blocks of 64 tokens"):
        prepare(tiny, tiny_llama.tokenizer, 64)


def test_a_name_or_a_file_on_disk(tmp_path):
    assert source_from_name_or_file("number-words").style == "pairs"
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "hello there"}\n', encoding="utf-8")
    assert source_from_name_or_file(str(path)).records[0].text == "hello there"
    with pytest.raises(DataError, match="no built-in dataset and no file"):
        source_from_name_or_file(str(tmp_path / "missing.txt"))
