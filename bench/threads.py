"""Benchmark: float64 LAPACK on one thread, scoped to the calling thread, against the alternatives.

    python bench/threads.py [--repeats 5]

The work is what compression's factorization does per block of smollm2-135m: SVDs of 576×576,
576×1536, 1536×576 and 192×576 float64 matrices, Cholesky and eigh of 576² and 1536² Gram
matrices. Three ways, alternated in each repeat so they see the same machine load:

  * scoped: ``lowrank_lab.threads.one_lapack_thread`` (the calling thread's OpenMP and MKL
    counts only; what the library uses);
  * set_num_threads(1): ``torch.set_num_threads(1)`` around the work (process-wide; what the
    library used to do);
  * default: torch's own thread count (baseline).

It also checks that the scoped limit is invisible outside: a thread started inside the scope
and the calling thread after it see torch's default count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab.threads import one_lapack_thread  # noqa: E402


def work(mats, grams) -> None:
    for w in mats:
        torch.linalg.svd(w, full_matrices=False)
    for a in grams:
        torch.linalg.cholesky_ex(a + 1e-6 * torch.eye(a.shape[0], dtype=torch.float64))
        torch.linalg.eigh(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    mats = [torch.randn(*s, dtype=torch.float64) for s in [(576, 576), (576, 1536), (1536, 576), (192, 576)]]
    grams = [(lambda x: x.T @ x)(torch.randn(4096, n, dtype=torch.float64)) for n in (576, 1536)]
    default = torch.get_num_threads()

    seen = {}
    with one_lapack_thread():
        seen["inside the scope"] = torch.get_num_threads()
        t = threading.Thread(target=lambda: seen.__setitem__("a thread started inside", torch.get_num_threads()))
        t.start()
        t.join()
    seen["after the scope"] = torch.get_num_threads()
    print(f"torch threads: default {default}; " + ", ".join(f"{k} {v}" for k, v in seen.items()))

    times: dict[str, list[float]] = {"scoped": [], "set_num_threads(1)": [], "default": []}
    for _ in range(args.repeats):
        with one_lapack_thread():
            start = time.perf_counter()
            work(mats, grams)
            times["scoped"].append(time.perf_counter() - start)
        torch.set_num_threads(1)
        start = time.perf_counter()
        work(mats, grams)
        times["set_num_threads(1)"].append(time.perf_counter() - start)
        torch.set_num_threads(default)
        start = time.perf_counter()
        work(mats, grams)
        times["default"].append(time.perf_counter() - start)
    base = statistics.median(times["default"])
    print(f"{'way':20s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'÷ default':>10s}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:20s} {med:9.3f} {min(values):7.3f} {max(values):7.3f} {med / base:10.3f}")


if __name__ == "__main__":
    main()
