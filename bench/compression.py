"""Benchmark: compression methods and rank allocation on smollm2-135m, perplexity against dense.

    python bench/compression.py [--model smollm2-135m] [--keep 0.8 0.6] [--samples 32] [--seq-len 256]

For each budget (fraction of the linear layers' parameters kept) it compresses with
  * ``svd`` + uniform ranks (no data), ``pca`` + uniform, ``whitened`` + uniform,
  * ``whitened`` + ``auto`` ranks,
and prints perplexity on the built-in *evaluation* split (32 blocks × 256 tokens; calibration
uses only the calibration split) with its ratio to the dense model's, the parameters kept, the
time each step took, and forward latency of the compressed model against the dense one
(median of interleaved dense/compressed timings of one 1×256 forward, and the median ratio;
measured once per plan, since the methods of one plan have the same shapes).
Calibration statistics, whitened decompositions and loss gradients are computed once and
shared by every row (the library caches them per model and settings).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import CalibrationSettings, allocate, compress, load_model  # noqa: E402
from lowrank_lab.data import builtin_text, token_blocks  # noqa: E402
from lowrank_lab.evaluate import perplexity  # noqa: E402

ROWS = (("svd", "uniform"), ("pca", "uniform"), ("whitened", "uniform"), ("whitened", "auto"))


def paired_latency(dense, compressed, ids: torch.Tensor, pairs: int) -> tuple[float, float, float]:
    """Median dense and compressed forward times (s) over interleaved pairs, and the median ratio."""
    d_times, c_times, ratios = [], [], []
    with torch.no_grad():
        for model in (dense, compressed):  # warm-up
            model(input_ids=ids)
        for i in range(pairs):
            order = (dense, compressed) if i % 2 == 0 else (compressed, dense)
            times = {}
            for model in order:
                start = time.perf_counter()
                model(input_ids=ids)
                times[id(model)] = time.perf_counter() - start
            d_times.append(times[id(dense)])
            c_times.append(times[id(compressed)])
            ratios.append(times[id(compressed)] / times[id(dense)])
    return statistics.median(d_times), statistics.median(c_times), statistics.median(ratios)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.8, 0.6])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-blocks", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=9)
    args = parser.parse_args(argv)

    loaded = load_model(args.model)
    cal = CalibrationSettings(samples=args.samples, seq_len=args.seq_len)
    text = builtin_text("evaluation")
    ids = token_blocks(loaded.tokenizer, text, 1, 256)  # (1, 256), for latency

    def ppl(model) -> float:
        return perplexity(model, loaded.tokenizer, text, seq_len=256, max_blocks=args.eval_blocks)

    start = time.perf_counter()
    dense_ppl = ppl(loaded.model)
    print(
        f"{args.model}: dense perplexity {dense_ppl:.2f} on the built-in evaluation split "
        f"({args.eval_blocks}×256 tokens), {time.perf_counter() - start:.0f}s",
        flush=True,
    )
    print(f"calibration: {cal.describe()}", flush=True)
    header = (
        f"{'removed':>7} {'method':>8} {'ranks':>7} {'linear kept':>11} {'params':>11} {'ppl':>7} "
        f"{'× dense':>7} {'alloc s':>7} {'compress s':>10} {'latency ms (dense)':>18} {'× dense':>7}"
    )
    lines = [header]
    latency: dict = {}
    print(header, flush=True)
    for keep in args.keep:
        for method, strategy in ROWS:
            t0 = time.perf_counter()
            plan = allocate(loaded, keep, strategy, method, cal)
            t1 = time.perf_counter()
            c = compress(loaded, plan, method, cal)
            t2 = time.perf_counter()
            p = ppl(c.model)
            if plan not in latency:  # one timing per plan shape: svd, pca and whitened uniform share one
                latency[plan] = paired_latency(loaded.model, c.model, ids, args.pairs)
            d_ms, c_ms, ratio = latency[plan]
            f = c.params.as_dict()
            kept = f["linear_params_compressed"] / f["linear_params_dense"]
            line = (
                f"{1 - keep:>7.0%} {method:>8} {strategy:>7} {kept:>11.3f} {f['params_compressed']:>11,} "
                f"{p:>7.2f} {p / dense_ppl:>7.2f} {t1 - t0:>7.0f} {t2 - t1:>10.0f} "
                f"{1e3 * c_ms:>8.1f} ({1e3 * d_ms:>5.1f}) {ratio:>7.2f}"
            )
            lines.append(line)
            print(line, flush=True)
            del c
    print(f"\ndense: {loaded.n_params:,} parameters, perplexity {dense_ppl:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
