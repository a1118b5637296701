"""Benchmark: how well the Ranks page's predicted perplexity orders real compressions of smollm2-135m.

    python bench/prediction.py [--model smollm2-135m] [--keep 0.9 0.8 0.7 0.6 0.5] [--store PATH]

For each budget and each allocation (``uniform`` and ``auto``), compresses with the whitened
method, measures perplexity on the built-in *evaluation* split (32 × 256 tokens) and records the
run in a run store (a fresh temporary one unless ``--store``), exactly as the app and the CLI
do: the prediction is made from calibration (the calibration split only) and recorded before the
measurement, with the loss fit learned from the runs recorded before it.

Prints each run's raw estimate D, the uniform plan's of the same size D_u, the anchored D*,
predicted and measured perplexity and, over all runs, Spearman's rank correlation between
prediction and measurement (target ≥ 0.9), for
  * the recorded prediction (what the Runs page plots),
  * the anchored estimate D* and the raw D (no fit),
and, as baselines measured on the same runs, the two errors a page without calibration could
show: the plain weighted weight error ‖W − W_r‖/‖W‖ (Eckart–Young, the Ranks page's) and the
activation-aware output error alone (whitened σ, no loss weighting).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import CalibrationSettings, allocate, compress, compute_spectra, load_model  # noqa: E402
from lowrank_lab.comparison import EvalSettings, compare  # noqa: E402
from lowrank_lab.plan import PlanCalculator  # noqa: E402
from lowrank_lab.prediction import prediction_basis  # noqa: E402
from lowrank_lab.prediction.basis import ANCHOR_TRUST  # noqa: E402
from lowrank_lab.runs import RunStore  # noqa: E402
from lowrank_lab.runs.frontier import fit_from_runs, score_runs  # noqa: E402
from lowrank_lab.runs.record import record_compression_run  # noqa: E402


def spearman(x, y) -> float:
    return float(stats.spearmanr(x, y).statistic)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-blocks", type=int, default=32)
    parser.add_argument("--store", type=Path, help="record into this database (default: a temporary one)")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="lowrank-bench-runs-")
    store = RunStore(args.store or Path(tmp.name) / "runs.sqlite3")
    loaded = load_model(args.model)
    cal = CalibrationSettings(samples=args.samples, seq_len=args.seq_len)
    evaluation = EvalSettings(max_blocks=args.eval_blocks, prompts=(), latency_repeats=1)
    start = time.perf_counter()
    basis = prediction_basis(loaded, cal, evaluation)  # calibration, whitened SVDs, loss costs, dense perplexity
    print(f"{args.model}: prediction basis in {time.perf_counter() - start:.0f} s; dense perplexity "
          f"{basis.dense_perplexity:.2f} ({args.eval_blocks}×256 evaluation tokens)", flush=True)  # fmt: skip
    plain = PlanCalculator(compute_spectra(loaded.model))

    header = (f"{'removed':>7} {'ranks':>7} {'linear kept':>11} {'weight err':>10} {'act. err':>8} {'raw D':>7} "
              f"{'D_u':>7} {'D*':>7} {'predicted':>21} {'measured':>9} {'fit runs':>8} {'s':>5}")  # fmt: skip
    print(header, flush=True)
    rows = []
    for keep in args.keep:
        for strategy in ("uniform", "auto"):
            t0 = time.perf_counter()
            plan = allocate(loaded, keep, strategy, "whitened", cal)
            compressed = compress(loaded, plan, "whitened", cal)
            comparison = compare(loaded, compressed, evaluation)
            run_id = record_compression_run(store, loaded, compressed, cal, comparison=comparison,
                                            evaluation=evaluation, allocation=strategy, keep=keep, origin="bench",
                                            save=False)  # fmt: skip
            run = store.get(run_id)
            p, row = run.prediction, run.row
            weight_error = plain.summarize(compressed.plan).weighted_error
            anchor = float(basis.uniform_anchor(row.linear_kept))
            rows.append((row, weight_error, p["activation_error"], anchor, p["anchored_loss_increase"],
                         p["raw_loss_increase"]))  # fmt: skip
            band = f"{p['perplexity']:.2f} ({p['perplexity_low']:.1f}–{p['perplexity_high']:.1f})"
            print(f"{1 - keep:>7.0%} {strategy:>7} {row.linear_kept:>11.3f} {weight_error:>10.4f} "
                  f"{p['activation_error']:>8.4f} {p['raw_loss_increase']:>7.3f} {anchor:>7.3f} "
                  f"{p['anchored_loss_increase']:>7.3f} {band:>21} {row.perplexity:>9.2f} "
                  f"{p['fit_runs']:>8} {time.perf_counter() - t0:>5.0f}", flush=True)  # fmt: skip
            del compressed

    measured = [r.perplexity for r, *_ in rows]
    recorded = score_runs([r for r, *_ in rows])
    print(
        f"\n{len(rows)} whitened compressions of {args.model}; Spearman ρ against measured perplexity (target ≥ 0.9):"
    )
    print(f"{'predictor':<58} {'Spearman':>8}")
    print(f"{'predicted perplexity as recorded (fit on earlier runs)':<58} {recorded.spearman:>8.3f}")
    print(f"{'anchored estimate D* (no fit)':<58} {spearman([r[4] for r in rows], measured):>8.3f}")
    print(f"{'raw second-order loss increase D (no fit)':<58} {spearman([x for *_, x in rows], measured):>8.3f}")
    print(f"{'baseline: activation-aware error alone':<58} {spearman([r[2] for r in rows], measured):>8.3f}")
    print(
        f"{'baseline: plain weight error ‖W−Wr‖/‖W‖ (Eckart–Young)':<58} {spearman([r[1] for r in rows], measured):>8.3f}"
    )  # noqa: E501
    print(f"Pearson r of log perplexities (recorded): {recorded.pearson_log:.3f}; "
          f"measured / predicted, median: {recorded.median_ratio:.3f}")  # fmt: skip
    # The trust that fits every run best: log ΔL = c + β₁ log D + β₂ log max(D, D_u), trust = β₁/(β₁ + β₂).
    raw, anchors = np.array([x for *_, x in rows]), np.array([r[3] for r in rows])
    increase = np.log(np.array(measured) / basis.dense_perplexity)
    use = (raw > 0) & (increase > 0)
    if use.sum() > 3:
        features = np.c_[np.ones(use.sum()), np.log(raw[use]), np.log(np.maximum(raw, anchors)[use])]
        (_, b1, b2), *_ = np.linalg.lstsq(features, np.log(increase[use]), rcond=None)
        trust = f"{b1 / (b1 + b2):.2f}" if b1 + b2 > 0 else "undefined"
        print(f"the anchor's trust that fits all runs best: {trust} (the prediction uses {ANCHOR_TRUST})")
    fit = fit_from_runs([r for r, *_ in rows])
    dense = basis.dense_perplexity
    within = np.mean([r.predicted_low <= r.perplexity <= r.predicted_high for r, *_ in rows])
    print(f"loss fit over all {fit.runs} runs: ΔL = {fit.a:.3f}·D*^{fit.b:.3f}, log-sd {fit.log_sd:.3f} "
          f"(×/÷ {math.exp(fit.log_sd):.2f}); {100 * within:.0f}% of measurements fell inside the recorded band; "
          f"dense perplexity {dense:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
