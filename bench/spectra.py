"""Benchmark: spectra and heavy-tailed metrics of every weight matrix of smollm2-135m, in one run.

    python bench/spectra.py [--model smollm2-135m] [--repeats 3] [--powerlaw-matrices 0] [--part all|alpha]

Prints the median wall time of each way and the ratios:
  * lowrank_lab cold: compute_spectra with an empty cache (float64 Gram + eigh),
  * weightwatcher: the ``weightwatcher`` package's ``analyze()`` on the same model,
  * svdvals loop: a plain loop of ``torch.linalg.svdvals`` over the same matrices,
then lowrank_lab warm (every matrix from the on-disk cache), and the accuracy of lowrank_lab's
singular values against float64 LAPACK (``numpy.linalg.svd``) on every matrix.

Heavy-tailed rows: the metric pass (power-law α by the Clauset–Shalizi–Newman method, KS
distance, α-weighted, log spectral norm) over every matrix from the cached σ, against the
same ``analyze()`` run; the ``powerlaw`` package's ``Fit`` on the same eigenvalues (the other
way to fit; all matrices, or the first N with ``--powerlaw-matrices N``); and the agreement of
each α with ``analyze()``'s α, matrix by matrix: the distribution of relative differences and
every matrix past 5%.
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
from lowrank_lab.spectra.heavy_tail import fit_power_law, heavy_tail_metrics, noise_floor  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run_weightwatcher(model):
    """``analyze()`` with its defaults (WeightWatcher's own CSN fit, no plots); its details table."""
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return ww.WeightWatcher(model=model).analyze()


def powerlaw_alphas(spectra) -> list[float]:
    """The ``powerlaw`` package's fit (``Fit``, x_min by the KS distance) on each matrix's eigenvalues."""
    # (In a first run with powerlaw's default α range [0, 3], 20 of 211 matrices agreed with analyze():
    # exactly those whose α is under 3.)
    import warnings

    import powerlaw

    alphas = []
    for sp in spectra:
        lam = np.square(sp.s)
        lam = lam[lam > noise_floor(sp)]
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            # powerlaw 2.0 bounds a power law's α to [0, 3] by default, which clamps every steeper tail
            # (and then picks another x_min): the range is opened so both fits search the same space.
            fit = powerlaw.Fit(lam, verbose=0, xmin_distribution="power_law", parameter_ranges={"alpha": [1, 1000]})
            alphas.append(float(fit.alpha))
    return alphas


def describe(rel: np.ndarray) -> str:
    q = np.quantile(rel, [0.5, 0.9, 0.95, 1.0])
    return (
        f"within 5%: {np.mean(rel <= 0.05):.1%} ({int(np.sum(rel <= 0.05))}/{rel.size}); |Δα|/α median {q[0]:.2e}, "
        f"p90 {q[1]:.2e}, p95 {q[2]:.2e}, max {q[3]:.2e}; exact to 1e-9: {int(np.sum(rel <= 1e-9))}"
    )


def heavy_tail_rows(spectra, details, t_ww: float, repeats: int, powerlaw_matrices: int) -> None:
    t_fit, metrics = timed(lambda: [heavy_tail_metrics(sp) for sp in spectra], max(5, repeats))
    ww_alpha = dict(zip(details["longname"], details["alpha"]))
    ww_xmin = dict(zip(details["longname"], details["xmin"]))
    ww_spikes = dict(zip(details["longname"], details["num_pl_spikes"]))
    ours = {sp.name: m for sp, m in zip(spectra, metrics)}
    common = [sp for sp in spectra if sp.name in ww_alpha]
    tied = sorted(set(ww_alpha) - set(ours))
    rel = np.array([abs(ours[sp.name].alpha - ww_alpha[sp.name]) / ww_alpha[sp.name] for sp in common])
    subset = spectra if powerlaw_matrices <= 0 else spectra[:powerlaw_matrices]
    start = time.perf_counter()
    pl = powerlaw_alphas(subset)
    t_pl = (time.perf_counter() - start) * len(spectra) / len(subset)
    t_own = sum(timed(lambda sp=sp: fit_power_law(np.square(sp.s), noise_floor(sp)), 1)[0] for sp in subset)
    t_own *= len(spectra) / len(subset)
    pl_rel = np.array(
        [abs(a - ww_alpha[sp.name]) / ww_alpha[sp.name] for sp, a in zip(subset, pl) if sp.name in ww_alpha]
    )
    own_vs_pl = np.array([abs(ours[sp.name].alpha - a) / a for sp, a in zip(subset, pl)])

    print("\nHeavy-tailed metrics (α, KS distance, α-weighted, log spectral norm) of every matrix")
    print(f"{'way':44} {'s':>9}  ratio")
    print(f"{'weightwatcher analyze() (SVDs + fits)':44} {t_ww:9.3f}  1")
    print(f"{'lowrank_lab metric pass (from cached σ)':44} {t_fit:9.3f}  {t_ww / t_fit:.1f}x faster   (target >= 10x)")
    print(f"{'lowrank_lab fits only (same matrices)':44} {t_own:9.3f}")
    scaled = "" if powerlaw_matrices <= 0 else f" (timed on {len(subset)}, scaled)"
    print(
        f"{'powerlaw package Fit (same eigenvalues)':44} {t_pl:9.3f}  {t_pl / t_own:.0f}x slower than our fit{scaled}"
    )
    print(f"\nα ours vs analyze() over {len(common)} matrices: {describe(rel)}   (target >= 90% within 5%)")
    if tied:
        print(f"  in analyze() only: {', '.join(tied)} (tied to the embedding: the same matrix, listed once here)")
    for sp in common:
        r = abs(ours[sp.name].alpha - ww_alpha[sp.name]) / ww_alpha[sp.name]
        if r > 0.05:
            m = ours[sp.name]
            print(f"  {sp.name}: ours α={m.alpha:.3f} (x_min {m.xmin:.4g}, tail {m.n_tail}) vs "
                  f"α={ww_alpha[sp.name]:.3f} (x_min {ww_xmin[sp.name]:.4g}, tail {ww_spikes[sp.name]})")  # fmt: skip
    print(f"α powerlaw package vs analyze() over {pl_rel.size}: {describe(pl_rel)}")
    print(f"α ours vs powerlaw package over {own_vs_pl.size}: {describe(own_vs_pl)}")
    bands = np.array([m.band for m in metrics])
    print(
        "α bands (ours): "
        + ", ".join(f"{b} {int(np.sum(bands == b))}" for b in ("heavy", "well-trained", "random-like", "no fit"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--powerlaw-matrices", type=int, default=0, help="fit only the first N with powerlaw (0: all)")
    parser.add_argument(
        "--part", choices=["all", "alpha"], default="all", help="alpha: only analyze() (once) and the α rows"
    )
    args = parser.parse_args()

    loaded = load_model(args.model)
    matrices = weight_matrices(loaded.model)
    print(f"model {args.model}: {len(matrices)} weight matrices, {sum(m.params for m in matrices) / 1e6:.1f}M weights")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")

    def cold():
        with tempfile.TemporaryDirectory() as d:
            return compute_spectra(matrices, cache=SpectrumCache(d))

    t_cold, spectra = timed(cold, args.repeats if args.part == "all" else 1)
    if args.part == "alpha":
        t_ww, details = timed(lambda: run_weightwatcher(loaded.model), 1)
        heavy_tail_rows(spectra, details, t_ww, args.repeats, args.powerlaw_matrices)
        return

    def svdvals_loop():
        with torch.no_grad():
            return [torch.linalg.svdvals(m.matrix()) for m in matrices]

    t_loop, _ = timed(svdvals_loop, args.repeats)
    t_ww, details = timed(lambda: run_weightwatcher(loaded.model), max(1, args.repeats - 1))
    ww_layers = len(details)

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
    heavy_tail_rows(spectra, details, t_ww, args.repeats, args.powerlaw_matrices)


if __name__ == "__main__":
    main()
