"""Benchmark: the compression pipeline on smollm2-135m, perplexity against dense and the old path.

    python bench/compression.py [--model smollm2-135m] [--keep 0.8 0.6] [--samples 32] [--seq-len 256]
                                [--eval-blocks 32] [--baselines svd pca] [--refine STEPS:LR:BATCH ...]
                                [--distill STEPS:LR:BATCH]

Every row goes through the one pipeline the command line and the app use
(:func:`lowrank_lab.compress.pipeline.run_job`: allocate → compress block by block → compare).
For each budget (fraction of the linear layers' parameters kept) it prints:

* the gap waterfall of ``whitened`` + ``auto`` (the stage report): whitened truncation on the
  dense model's activations with uniform ranks, then with the allocated ranks — these two are
  what the old whole-model path computed, the named baselines — then block k calibrated on
  what the compressed blocks 0..k−1 produce, then each layer refit to the dense outputs (the
  engine's result), then, with ``--distill``, every factor trained end to end against the dense
  model's next-token distributions (:mod:`lowrank_lab.compress.distill`; the engine row and the
  generations are then the distilled model's);
* with ``--refine``, the engine again on the same ``auto`` plan with per-block refinement
  (``EngineSettings(refine_steps, refine_lr, batch_size)``: Adam steps on each block's factors
  against the dense block's outputs, one calibration batch of BATCH blocks per step), its
  generations and its extra time;
* rows for the data-free and simpler methods (``svd`` and ``pca`` with uniform ranks);
* the three generations of the engine's model next to the dense ones.

Perplexity is on the built-in *evaluation* split (``--eval-blocks`` × 256 tokens); calibration
and every allocation decision use only the calibration split. Ratios are to the dense
perplexity measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import CalibrationSettings, load_model  # noqa: E402
from lowrank_lab.comparison import EvalSettings  # noqa: E402
from lowrank_lab.compress.distill import DistillSettings  # noqa: E402
from lowrank_lab.compress.engine import EngineSettings  # noqa: E402
from lowrank_lab.compress.pipeline import CompressionJob, run_job  # noqa: E402
from lowrank_lab.errors import SettingsError  # noqa: E402


def refine_setting(text: str) -> EngineSettings:
    """``STEPS:LR:BATCH`` (e.g. ``64:1e-3:2``) → the engine's settings with that refinement."""
    try:
        steps, lr, batch = text.split(":")
        return EngineSettings(refine_steps=int(steps), refine_lr=float(lr), batch_size=int(batch))
    except (ValueError, SettingsError) as err:
        raise argparse.ArgumentTypeError(
            f"--refine takes STEPS:LR:BATCH such as 64:1e-3:2, got {text!r} ({err})"
        ) from None


def distill_setting(text: str) -> DistillSettings:
    """``STEPS:LR:BATCH`` (e.g. ``60:1e-4:4``) → the distillation's settings."""
    try:
        steps, lr, batch = text.split(":")
        return DistillSettings(int(steps), float(lr), int(batch))
    except (ValueError, SettingsError) as err:
        raise argparse.ArgumentTypeError(
            f"--distill takes STEPS:LR:BATCH such as 60:1e-4:4, got {text!r} ({err})"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.8, 0.6])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-blocks", type=int, default=32)
    parser.add_argument("--baselines", nargs="*", default=["svd", "pca"], choices=["svd", "pca"])
    parser.add_argument("--refine", nargs="*", type=refine_setting, default=[], metavar="STEPS:LR:BATCH")
    parser.add_argument("--distill", type=distill_setting, default=DistillSettings(), metavar="STEPS:LR:BATCH")
    args = parser.parse_args(argv)

    loaded = load_model(args.model)
    cal = CalibrationSettings(samples=args.samples, seq_len=args.seq_len)
    ev = EvalSettings(max_blocks=args.eval_blocks)
    print(f"{args.model}: calibration {cal.describe()}; evaluation {ev.source}, {args.eval_blocks}×256 tokens")
    table = [f"{'removed':>7}  {'row':<52} {'ppl':>8} {'× dense':>8} {'linear kept':>11} {'s':>6}"]

    def row(keep: float, name: str, ppl: float, dense: float, kept: float | None, seconds: float | None) -> None:
        kept_s = "" if kept is None else f"{kept:.3f}"
        sec = "" if seconds is None else f"{seconds:.0f}"
        line = f"{1 - keep:>7.0%}  {name:<52} {ppl:>8.2f} {ppl / dense:>8.2f} {kept_s:>11} {sec:>6}"
        table.append(line)
        print(line, flush=True)

    for keep in args.keep:
        start = time.perf_counter()
        job = CompressionJob(
            keep=keep,
            allocation="auto",
            method="whitened",
            calibration=cal,
            distill=args.distill,
            evaluation=ev,
            stage_report=True,
        )
        result = run_job(loaded, job)
        seconds = time.perf_counter() - start
        stages, comparison = result.stages, result.comparison
        dense = comparison.dense.perplexity
        kept = result.params.linear_compressed / result.params.linear_dense
        row(keep, "dense", dense, dense, 1.0, None)
        for figure in stages.stages:
            row(keep, f"whitened auto: {figure.stage}", figure.perplexity, dense, kept, None)
        name = "whitened auto (engine; compare())"
        if args.distill.active:
            d = args.distill
            name = f"whitened auto + distill {d.steps}:{d.lr:g}:{d.batch_size} (compare())"
        row(keep, name, comparison.compressed.perplexity, dense, kept, seconds)
        print(
            f"  seconds: {', '.join(f'{k} {v:.0f}' for k, v in result.seconds.items())}; "
            f"candidates: {', '.join(f'{c.name} {c.calibration_loss:.4f}' for c in result.allocation.candidates)}"
            f" → {result.allocation.candidates[result.allocation.chosen].name}",
            flush=True,
        )
        for g in comparison.generations:
            print(f"  > {g.prompt}\n    dense:      {g.dense!r}\n    compressed: {g.compressed!r}", flush=True)
        for engine in args.refine:
            start = time.perf_counter()
            refined = run_job(loaded, CompressionJob(plan=result.plan, calibration=cal, evaluation=ev, engine=engine))
            name = f"+ refine {engine.refine_steps} steps lr {engine.refine_lr:g} batch {engine.batch_size}"
            ppl = refined.comparison.compressed.perplexity
            row(keep, f"whitened auto {name}", ppl, dense, kept, time.perf_counter() - start)
            print(f"  seconds: {', '.join(f'{k} {v:.0f}' for k, v in refined.seconds.items())}", flush=True)
            for g in refined.comparison.generations:
                print(f"  > {g.prompt}\n    refined:    {g.compressed!r}", flush=True)
        for method in args.baselines:
            start = time.perf_counter()
            other = run_job(
                loaded,
                CompressionJob(
                    keep=keep,
                    allocation="uniform",
                    method=method,
                    calibration=cal,
                    evaluation=EvalSettings(max_blocks=args.eval_blocks, prompts=()),
                ),
            )
            k = other.params.linear_compressed / other.params.linear_dense
            ppl = other.comparison.compressed.perplexity
            row(keep, f"{method} uniform", ppl, other.comparison.dense.perplexity, k, time.perf_counter() - start)
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
