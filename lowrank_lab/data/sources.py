"""Training data before tokenization: built-in sets and uploaded files, as records.

A record is plain text (the loss covers every token) or a prompt with its response (the loss
covers the response only). Uploads are read as text and parsed here: ``.txt`` (plain text),
``.jsonl`` and ``.csv`` (a ``text`` column, or ``prompt`` and ``response`` columns). Never a
pickle. Every problem is a :class:`DataError` that names the file, the line or row, and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lowrank_lab.data.files import read_user_file, user_path
from lowrank_lab.data.instructions import INSTRUCTION_TASK, instruction_pairs
from lowrank_lab.data.text import builtin_topics, decode_text_upload
from lowrank_lab.errors import ArgumentTypeError, DataError

RecordStyle = Literal["text", "pairs"]
UPLOAD_SUFFIXES = (".txt", ".jsonl", ".csv")
MAX_TRAINING_UPLOAD_BYTES = 10 * 2**20  # 10 MiB of text is hours of CPU training already
MAX_ROW_CHARS = 20_000
# 50,000 rows tokenize in a few seconds; more is more than a CPU fine-tune ever reads.
MAX_ROWS = 50_000
_FORMATS = ".txt (plain text), .jsonl or .csv (a 'text' column, or 'prompt' and 'response' columns)"


@dataclass(frozen=True)
class Record:
    """One training example: plain ``text``, or ``prompt`` → ``text`` (the response).

    Attributes:
        text: the text (or the response, when there is a prompt).
        prompt: the prompt, or None for plain text.
        where: where it came from, for messages (e.g. ``"line 7"``).
    """

    text: str
    prompt: str | None = None
    where: str = ""


@dataclass(frozen=True)
class TrainingSource:
    """A named set of records, and the held-out records to validate on when it ships its own.

    Attributes:
        name: a short name (a built-in name or the file name).
        style: ``text`` (language modelling) or ``pairs`` (prompt → response).
        records: the training records (all of them, for an upload that gets split later).
        validation: held-out records; empty means "split ``records``".
        description: one line for people.
    """

    name: str
    style: RecordStyle
    records: tuple[Record, ...]
    validation: tuple[Record, ...] = ()
    description: str = ""

    def preview(self, rows: int = 5, chars: int = 200) -> list[dict[str, str]]:
        """The first ``rows`` records as table rows, each value cut to ``chars`` characters."""

        def cut(s: str) -> str:
            return s if len(s) <= chars else s[: chars - 1] + "…"

        if self.style == "pairs":
            return [{"prompt": cut(r.prompt or ""), "response": cut(r.text)} for r in self.records[:rows]]
        return [{"text": cut(r.text)} for r in self.records[:rows]]

    def demo_prompts(self, count: int = 3, words: int = 12) -> list[str]:
        """Prompts to generate from before and after training: held-out prompts, or openings of held-out text."""
        pool = self.validation or self.records[::-1]
        if self.style == "pairs":
            return [r.prompt or "" for r in pool[:count]]
        return [" ".join(r.text.split()[:words]) for r in pool[:count] if r.text.split()]


BUILTIN_DATASETS: dict[str, str] = {
    "domain-text": "Python documentation prose (built-in calibration split); validated on the evaluation split",
    "number-words": f"400 instructions “{INSTRUCTION_TASK}” with their answers; 40 held out",
}


def builtin_source(name: str) -> TrainingSource:
    """A built-in training set by name (see :data:`BUILTIN_DATASETS`).

    Raises:
        DataError: an unknown name.
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"a built-in dataset is named by a str, got {type(name).__name__}")
    if name == "domain-text":
        train = tuple(Record(t, where=f"topic {k}") for k, t in builtin_topics("calibration").items())
        held = tuple(Record(t, where=f"topic {k}") for k, t in builtin_topics("evaluation").items())
        return TrainingSource(name, "text", train, held, BUILTIN_DATASETS[name])
    if name == "number-words":
        pairs = [Record(r, p, f"example {i + 1}") for i, (p, r) in enumerate(instruction_pairs(440, seed=0))]
        return TrainingSource(name, "pairs", tuple(pairs[:400]), tuple(pairs[400:]), BUILTIN_DATASETS[name])
    raise DataError(f"no built-in dataset named {name!r}; use one of {', '.join(BUILTIN_DATASETS)} or a file")


def read_upload(data: bytes, filename: str) -> TrainingSource:
    """Parse an uploaded training file (``.txt``, ``.jsonl`` or ``.csv``).

    Args:
        data: the file's bytes (UTF-8 text).
        filename: its name; the suffix chooses the format.

    Raises:
        ArgumentTypeError: ``data`` is not bytes or ``filename`` not a str.
        DataError: an unknown suffix, a file over the size limit, not UTF-8, empty, a malformed
            JSON line or CSV row, missing columns, an empty value, a row over the length limit,
            or more than :data:`MAX_ROWS` rows.
    """
    if not isinstance(filename, str):
        raise ArgumentTypeError(f"filename must be a str, got {type(filename).__name__}")
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ArgumentTypeError(f"an upload is read from bytes, got {type(data).__name__}; pass the file's contents")
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DataError(f"{filename}: cannot read {suffix or 'a file without a suffix'}; upload {_FORMATS}")
    if len(data) > MAX_TRAINING_UPLOAD_BYTES:
        raise DataError(
            f"{filename} is {len(data) / 2**20:.1f} MiB; training data is limited to "
            f"{MAX_TRAINING_UPLOAD_BYTES // 2**20} MiB. Upload a smaller sample."
        )
    text = decode_text_upload(data, filename)
    if suffix == ".txt":
        return TrainingSource(filename, "text", (Record(text, where="the file"),), description="plain text")
    rows = _jsonl_rows(text, filename) if suffix == ".jsonl" else _csv_rows(text, filename)
    return _source_from_rows(rows, filename)


def _too_many_rows(filename: str) -> DataError:
    return DataError(
        f"{filename} holds more than {MAX_ROWS:,} rows; a fine-tune here reads far fewer. "
        f"Upload a sample of at most {MAX_ROWS:,} rows"
    )


def _jsonl_rows(text: str, filename: str) -> list[tuple[str, dict]]:
    rows = []
    # Only "\n" ends a line: str.splitlines() would also cut at U+2028 and other characters
    # that JSON strings may hold as they are.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{filename}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                'each line must be one JSON object such as {"text": "..."}'
            ) from None
        except RecursionError:
            raise DataError(
                f"{filename}, line {number}: the JSON is nested too deeply to read; "
                'write each line as a flat object such as {"text": "..."}'
            ) from None
        except ValueError:  # an integer with thousands of digits: Python refuses to convert it
            raise DataError(
                f"{filename}, line {number}: a number with thousands of digits; write each line as "
                '{"text": "..."} with the text in quotes'
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                f"{filename}, line {number}: a JSON {_json_kind(row)}, not an object; "
                'write each line as {"text": "..."} or {"prompt": "...", "response": "..."}'
            )
        rows.append((f"line {number}", row))
        if len(rows) > MAX_ROWS:
            raise _too_many_rows(filename)
    return rows


def _json_kind(value: object) -> str:
    return {list: "list (array)", str: "string", bool: "true/false", type(None): "null"}.get(type(value), "number")


def _csv_rows(text: str, filename: str) -> list[tuple[str, dict]]:
    """Rows with their place: "row R" is the spreadsheet row (the header is row 1); the file
    line is named too when a quoted cell spans lines, so the two differ."""
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines, strict=True)
    rows: list[tuple[str, dict]] = []
    header: list[str] | None = None
    line = 0  # the last physical line read
    try:
        for number, cells in enumerate(reader, start=1):
            start, line = line + 1, reader.line_num
            where = f"row {number}"  # as a spreadsheet numbers it; the file's lines too when they differ
            if line != start:
                where += f" (lines {start}–{line})"
            elif start != number:
                where += f" (line {start})"
            if header is None:
                header = _csv_header(cells, filename)
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise DataError(
                    f"{filename}, {where}: {len(cells)} cells but the header has {len(header)} columns; "
                    "quote cells that hold commas"
                )
            rows.append((where, dict(zip(header, cells))))
            if len(rows) > MAX_ROWS:
                raise _too_many_rows(filename)
    except csv.Error as err:
        where = f"line {reader.line_num or 1}"
        if "unexpected end of data" in str(err):
            raise DataError(
                f"{filename}: a quoted cell opened on or after line {line + 1} is never closed (the file ends "
                'inside the quotes); close the quote with a " or remove it'
            ) from None
        if "field larger than field limit" in str(err):
            raise DataError(
                f"{filename}, {where}: a cell is over the limit of {csv.field_size_limit():,} characters; "
                f"keep cells under {MAX_ROW_CHARS:,} characters"
            ) from None
        raise DataError(f'{filename}, {where}: {err}; check the quoting (a " inside a cell is written "")') from None
    return rows


def _csv_header(cells: list[str], filename: str) -> list[str]:
    names = [c.strip() for c in cells]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise DataError(f"{filename}: the header names the column {repeated[0]!r} twice; give each column one name")
    return names


def _source_from_rows(rows: list[tuple[str, dict]], filename: str) -> TrainingSource:
    if not rows:
        raise DataError(f"{filename} holds no rows; add at least a few examples")
    columns = set(rows[0][1])
    if "prompt" in columns and "response" in columns:
        style: RecordStyle = "pairs"
        keys = ("prompt", "response")
    elif "text" in columns:
        style, keys = "text", ("text",)
    else:
        found = ", ".join(sorted(str(c) for c in columns)) or "none"
        raise DataError(
            f"{filename}: no 'text' column and no 'prompt' and 'response' columns (found: {found}); "
            "rename the columns, e.g. to 'text'"
        )
    records = []
    for where, row in rows:
        values = [row.get(k) for k in keys]
        for key, value in zip(keys, values):
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{filename}, {where}: {key!r} is a JSON {_json_kind(value)}, not a string; "
                    f'write it in quotes, e.g. "{key}": "..."'
                )
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{filename}, {where}: {key!r} is missing or empty; give every row a {key!r} string")
            if len(value) > MAX_ROW_CHARS:
                raise DataError(
                    f"{filename}, {where}: {key!r} has {len(value):,} characters, over the limit of "
                    f"{MAX_ROW_CHARS:,}; split the row or shorten it"
                )
        if style == "pairs":
            records.append(Record(values[1], values[0], where))
        else:
            records.append(Record(values[0], where=where))
    return TrainingSource(filename, style, tuple(records), description=f"{len(records)} rows ({', '.join(keys)})")


def source_from_name_or_file(name_or_path: str) -> TrainingSource:
    """A built-in dataset by name, or a ``.txt``/``.jsonl``/``.csv`` file read from disk.

    Raises:
        ArgumentTypeError: not a str or path.
        DataError: neither a built-in name nor a readable regular file (a folder, a FIFO, a
            device, a broken link), too large, or malformed.
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_DATASETS:
        return builtin_source(name_or_path)
    path = user_path(name_or_path, "training data")
    if not path.exists() and not path.is_symlink():
        raise DataError(
            f"no built-in dataset and no file named {str(name_or_path)!r}; use one of "
            f"{', '.join(BUILTIN_DATASETS)} or a path to a {_FORMATS} file"
        )
    fix = f"give a {_FORMATS} file"
    if path.suffix.lower() not in UPLOAD_SUFFIXES:
        if not path.is_file():  # a folder, a FIFO, a device: say what it is rather than what suffix it lacks
            read_user_file(path, "training data", 0, fix)
        raise DataError(f"training data {path}: cannot read {path.suffix or 'a file without a suffix'}; {fix}")
    data = read_user_file(path, "training data", MAX_TRAINING_UPLOAD_BYTES, fix)
    return read_upload(data, path.name)
