"""The data readers given bad input: uploads, files on disk, calibration text, tokenization.

Every refusal is a DataError (or, for a value of the wrong type, an ArgumentTypeError) naming
the file, the line or row, and the fix; nothing is read from a FIFO or a device.
"""

from __future__ import annotations

import json
import re

import pytest

from lowrank_lab import ArgumentTypeError, DataError
from lowrank_lab.data import builtin_source, decode_text_upload, prepare, read_upload, source_from_name_or_file
from lowrank_lab.data.sources import MAX_ROWS, MAX_TRAINING_UPLOAD_BYTES
from lowrank_lab.data.text import read_text_file, token_blocks
from tests.unit.bad_input_support import hostile, listing

UPLOADS = [
    # (id, bytes, file name, message fragment)
    ("empty text", b"", "a.txt", "a.txt holds no text"),
    ("only blank lines", b"  \n\n", "a.jsonl", "holds no text"),
    ("latin-1", "café".encode("latin-1"), "a.txt", "a.txt is not UTF-8 text (byte 3 is 0xe9)"),
    ("binary", b"PK\x03\x04\x00\x00", "a.txt", "looks like a binary file"),
    ("over the size limit", b"x" * (MAX_TRAINING_UPLOAD_BYTES + 1), "a.txt", "limited to 10 MiB"),
    ("unknown suffix", b"text\nhi\n", "a.parquet", "cannot read .parquet"),
    ("no suffix", b"hello", "README", "cannot read a file without a suffix"),
    ("jsonl not JSON", b'{"text": "ok"}\n{"text": "bro\n', "a.jsonl", "a.jsonl, line 2: not valid JSON"),
    (
        "jsonl nested 50,000 deep",
        b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n",
        "a.jsonl",
        "line 1: the JSON is nested too deeply",
    ),
    (
        "jsonl number of 5000 digits",
        b'{"text": ' + b"9" * 5000 + b"}\n",
        "a.jsonl",
        "line 1: a number with thousands of digits",
    ),
    ("jsonl a list", b'{"text": "ok"}\n["a list"]\n', "a.jsonl", "line 2: a JSON list (array), not an object"),
    ("jsonl a number text", b'{"text": 12}\n', "a.jsonl", "line 1: 'text' is a JSON number, not a string"),
    ("jsonl null text", b'{"text": null}\n', "a.jsonl", "line 1: 'text' is missing or empty"),
    ("jsonl no text column", b'{"body": "x"}\n', "a.jsonl", "no 'text' column and no 'prompt' and 'response'"),
    ("jsonl empty response", b'{"prompt": "p", "response": ""}\n', "a.jsonl", "line 1: 'response' is missing or empty"),
    (
        "jsonl row too long",
        json.dumps({"text": "x" * 20_001}).encode(),
        "a.jsonl",
        "line 1: 'text' has 20,001 characters",
    ),
    (
        "jsonl U+2028 in a string is one line",
        '{"text": "a\u2028b"}\n{"oops"\n'.encode(),
        "a.jsonl",
        "line 2: not valid JSON",
    ),
    (
        "csv quote never closed",
        b'text\nok\n"open\nstill open\n',
        "a.csv",
        "a quoted cell opened on or after line 3 is never closed",
    ),
    ("csv extra cells", b"text\nfine\na,b,c\n", "a.csv", "a.csv, row 3: 3 cells but the header has 1 columns"),
    ("csv duplicate column", b"text,text\na,b\n", "a.csv", "names the column 'text' twice"),
    ("csv empty cell", b"prompt,response\nq,a\nq2,\n", "a.csv", "a.csv, row 3: 'response' is missing or empty"),
    ("csv row past a quoted newline", b'prompt,response\n"two\nlines",a\nq,\n', "a.csv", "a.csv, row 3 (line 4)"),
    ("csv row spanning lines", b'prompt,response\nq,a\n"two\nlines",\n', "a.csv", "a.csv, row 3 (lines 3–4)"),
    ("csv header only", b"text\n", "a.csv", "holds no rows"),
    ("csv NUL byte", b"text\nhe\x00llo\n", "a.csv", "looks like a binary file"),
    ("csv over the row cap", b"text\n" + b"x\n" * (MAX_ROWS + 1), "a.csv", f"more than {MAX_ROWS:,} rows"),
    ("jsonl over the row cap", b'{"text": "x"}\n' * (MAX_ROWS + 1), "a.jsonl", f"more than {MAX_ROWS:,} rows"),
]


@pytest.mark.parametrize(("data", "name", "fragment"), [c[1:] for c in UPLOADS], ids=[c[0] for c in UPLOADS])
def test_read_upload_refuses(data, name, fragment):
    with pytest.raises(DataError, match=re.escape(fragment)) as err:
        read_upload(data, name)
    assert name in str(err.value)


def test_csv_rows_are_numbered_as_a_spreadsheet_numbers_them():
    source = read_upload(b"text\nfirst\nsecond\n", "a.csv")
    assert [r.where for r in source.records] == ["row 2", "row 3"]  # the header is row 1


@pytest.fixture
def paths(tmp_path):
    p = hostile(tmp_path / "user-area")
    p["root"] = tmp_path / "user-area"
    return p


FILES = [
    ("missing", lambda p: p["root"] / "none.txt", "no built-in dataset and no file named"),
    ("a folder", lambda p: p["dir"], "is a folder, not a file"),
    ("a FIFO", lambda p: p["fifo"], "FIFO (named pipe), not a regular file"),
    ("/dev/zero", lambda p: "/dev/zero", "is a device, not a regular file"),
    ("a broken link", lambda p: p["dangling"], "broken symbolic link"),
    ("under a file", lambda p: p["file.txt"] / "x.txt", "no built-in dataset and no file named"),
    ("binary with a .txt name", lambda p: p["binary.txt"], "looks like a binary file"),
]


@pytest.mark.parametrize(("path", "fragment"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_training_files_on_disk(paths, path, fragment):
    before = listing(paths["root"])
    with pytest.raises(DataError, match=re.escape(fragment)):
        source_from_name_or_file(str(path(paths)))
    assert listing(paths["root"]) == before


TEXT_FILES = [
    ("a folder", lambda p: p["dir"], "is a folder, not a file"),
    ("a FIFO", lambda p: p["fifo"], "FIFO"),
    ("/dev/zero", lambda p: "/dev/zero", "is a device"),
    ("a broken link", lambda p: p["dangling"], "broken symbolic link"),
    ("missing", lambda p: p["root"] / "none.txt", "does not exist"),
    ("empty", lambda p: p["empty.txt"], "holds no text"),
    ("latin-1", lambda p: p["latin1.txt"], "is not UTF-8"),
]


@pytest.mark.parametrize(("path", "fragment"), [c[1:] for c in TEXT_FILES], ids=[c[0] for c in TEXT_FILES])
def test_text_files_name_the_option(paths, path, fragment):
    with pytest.raises(DataError, match=re.escape(fragment)) as err:
        read_text_file(path(paths), "calibration text (--calibration-text)")
    assert "--calibration-text" in str(err.value)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda tok: decode_text_upload("a str", "x.txt"), "read from bytes, got str"),
        (lambda tok: read_upload(b"text", None), "filename must be a str"),
        (lambda tok: source_from_name_or_file(None), "must be a file path"),
        (lambda tok: prepare(None, tok, 64), "prepare takes a TrainingSource"),
        (lambda tok: prepare(builtin_source("number-words"), tok, "64"), "max_seq_len must be an integer"),
        (lambda tok: token_blocks(tok, "text " * 50, "2", 8), "samples must be an integer"),
        (lambda tok: token_blocks(tok, None, 2, 8), "must be a str, got NoneType"),
    ],
)
def test_wrong_types_are_type_errors_with_a_message(tiny_llama, call, fragment):
    with pytest.raises(ArgumentTypeError, match=re.escape(fragment)):
        call(tiny_llama.tokenizer)


def test_too_little_text_names_the_text_and_the_options(tiny_llama):
    with pytest.raises(DataError, match=r"the calibration text \(notes.txt\) has \d+ tokens.*--samples, --seq-len"):
        from lowrank_lab.compress import CalibrationSettings
        from lowrank_lab.compress.calibration import calibration_blocks

        calibration_blocks(tiny_llama, CalibrationSettings(4, 64, "a few words", "notes.txt"))
    short = read_upload(b"a few words\n", "tiny.txt")
    with pytest.raises(DataError, match=re.escape("tiny.txt gives 1 of the blocks of 64 tokens")) as err:
        prepare(short, tiny_llama.tokenizer, 64)
    assert "--max-seq-len" in str(err.value)


def test_batched_preparation_gives_the_same_examples_as_one_row_at_a_time(tiny_llama):
    """The chat template rendered once and the batched tokenizer change nothing in the examples."""
    from lowrank_lab.data import examples

    rows = [{"prompt": f" q{i} with  spaces ", "response": f"answer {i}\n"} for i in range(40)]
    source = read_upload("\n".join(json.dumps(r) for r in rows).encode(), "qa.jsonl")
    fast = prepare(source, tiny_llama.tokenizer, 64, seed=1)
    tok = tiny_llama.tokenizer
    one_by_one = set()  # the split shuffles the order: compare as sets
    for record in source.records:
        head, tail = examples._pair_texts(tok, record.prompt, record.text)
        ids_p, ids_r = examples._ids(tok, head), examples._ids(tok, tail)
        one_by_one.add(tuple(ids_p + ids_r))
    assert {e.input_ids for e in fast.train + fast.validation} == one_by_one
    steps = []
    prepare(source, tok, 64, progress=lambda done, total, message: steps.append((done, total)))
    assert steps and steps[-1][0] == steps[-1][1]  # progress reaches the end
