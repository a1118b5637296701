"""Benchmark: spectra of every weight matrix of smollm2-135m, three ways in one run.

    python bench/spectra.py [--model smollm2-135m] [--repeats 3]

Prints the median wall time of each way and the ratios:
  * lowrank_lab cold: compute_spectra with an empty cache (float64 Gram + eigh),
  * weightwatcher: the ``weightwatcher`` package's ``analyze()`` on the same model,
  * svdvals loop: a plain loop of ``torch.linalg.svdvals`` over the same matrices,
then lowrank_lab warm (every matrix from the on-disk cache), and the accuracy of lowrank_lab's
singular values against float64 LAPACK (``numpy.linalg.svd``) on every matrix.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import compute_spectra, load_model, weight_matrices  # noqa: E402
from lowrank_lab.spectra import SpectrumCache  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run_weightwatcher(model) -> int:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        details = ww.WeightWatcher(model=model).analyze()
    return len(details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model)
    matrices = weight_matrices(loaded.model)
    print(f"model {args.model}: {len(matrices)} weight matrices, {sum(m.params for m in matrices) / 1e6:.1f}M weights")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")

    def cold():
        with tempfile.TemporaryDirectory() as d:
            return compute_spectra(matrices, cache=SpectrumCache(d))

    t_cold, spectra = timed(cold, args.repeats)

    def svdvals_loop():
        with torch.no_grad():
            return [torch.linalg.svdvals(m.matrix()) for m in matrices]

    t_loop, _ = timed(svdvals_loop, args.repeats)
    t_ww, ww_layers = timed(lambda: run_weightwatcher(loaded.model), max(1, args.repeats - 1))

    with tempfile.TemporaryDirectory() as d:
        cache = SpectrumCache(d)
        compute_spectra(matrices, cache=cache)
        t_warm, _ = timed(lambda: compute_spectra(matrices, cache=cache), max(5, args.repeats))

    worst = 0.0
    for m, sp in zip(matrices, spectra):
        ref = np.linalg.svd(m.matrix().double().numpy(), compute_uv=False)
        keep = ref >= 1e-3 * ref[0]
        worst = max(worst, float(np.max(np.abs(sp.s[keep] - ref[keep]) / ref[keep])))

    rows = [
        ("lowrank_lab cold (no cache)", t_cold, f"{len(matrices)} matrices"),
        ("weightwatcher analyze()", t_ww, f"{ww_layers} layers"),
        ("torch.linalg.svdvals loop", t_loop, f"{len(matrices)} matrices"),
        ("lowrank_lab warm (disk cache)", t_warm, f"{len(matrices)} matrices"),
    ]
    print(f"{'way':32} {'median s':>9}  covers")
    for name, t, covers in rows:
        print(f"{name:32} {t:9.3f}  {covers}")
    print()
    print(f"weightwatcher / lowrank_lab cold : {t_ww / t_cold:6.2f}x   (target >= 5x)")
    print(f"svdvals loop / lowrank_lab cold  : {t_loop / t_cold:6.2f}x   (target > 1x)")
    print(f"lowrank_lab cold / warm          : {t_cold / t_warm:6.2f}x   (target >= 10x)")
    print(f"max relative error vs float64 LAPACK, values >= 1e-3*sigma_max: {worst:.2e}   (target <= 1e-3)")


if __name__ == "__main__":
    main()
