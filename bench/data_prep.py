"""Benchmark: preparing uploads at the limits, batched against one row at a time.

    python bench/data_prep.py [--model smollm2-135m] [--rows 50000] [--baseline-rows 10000] [--repeats 3]

Files at the upload limits, prepared with the model's own tokenizer (its chat template for
prompt/response rows):
  * a CSV of ``--rows`` prompt/response rows (the row cap): ``prepare`` (the template rendered
    once with placeholders, batched tokenization) against the baseline of rendering and
    tokenizing one row at a time (what ``prepare`` did before), timed on ``--baseline-rows``
    rows in the same run and also with ``prepare``, so the ratio compares equal work;
  * a 10 MiB plain-text file (the size limit): ``prepare`` (pieces tokenized in batches).
Medians of ``--repeats`` runs; the baseline runs once per repeat as well.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import load_model  # noqa: E402
from lowrank_lab.data import builtin_text, prepare, read_upload  # noqa: E402
from lowrank_lab.data import examples as ex  # noqa: E402
from lowrank_lab.data.sources import MAX_TRAINING_UPLOAD_BYTES  # noqa: E402


def one_row_at_a_time(tokenizer, source) -> int:
    """The old way: each row's template rendered and its two parts tokenized on their own."""
    n = 0
    for record in source.records:
        head, tail = ex._pair_texts(tokenizer, record.prompt or "", record.text)
        n += len(ex._ids(tokenizer, head)) + len(ex._ids(tokenizer, tail))
    return n


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--baseline-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tok = load_model(args.model).tokenizer

    def csv(rows: int) -> bytes:
        return ("prompt,response\n" + "".join(f"What is {i} plus {i}?,It is {2 * i}.\n" for i in range(rows))).encode()

    full = read_upload(csv(args.rows), "rows.csv")
    small = read_upload(csv(args.baseline_rows), "rows.csv")
    text = builtin_text("calibration")
    big = read_upload(
        (text * (MAX_TRAINING_UPLOAD_BYTES // len(text) + 1)).encode()[:MAX_TRAINING_UPLOAD_BYTES], "big.txt"
    )
    times: dict[str, list[float]] = {
        "baseline": [],
        "batched (same rows)": [],
        "batched (row cap)": [],
        "10 MiB text": [],
    }
    for _ in range(args.repeats):
        times["baseline"].append(timed(lambda: one_row_at_a_time(tok, small)))
        times["batched (same rows)"].append(timed(lambda: prepare(small, tok, 128)))
        times["batched (row cap)"].append(timed(lambda: prepare(full, tok, 128)))
        times["10 MiB text"].append(timed(lambda: prepare(big, tok, 128)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}, {args.repeats} repeats (medians)")
    print(f"  {args.baseline_rows:,} rows one at a time (baseline): {med['baseline']:.2f} s")
    print(
        f"  {args.baseline_rows:,} rows, prepare:                {med['batched (same rows)']:.2f} s "
        f"({med['baseline'] / med['batched (same rows)']:.1f}× faster)"
    )
    print(f"  {args.rows:,} rows (the row cap), prepare:       {med['batched (row cap)']:.2f} s")
    print(f"  10 MiB of text (the size limit), prepare:   {med['10 MiB text']:.2f} s")


if __name__ == "__main__":
    main()
