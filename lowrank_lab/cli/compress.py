"""``compress``: turn a budget (or a plan file) into a compressed model, measure it, optionally save it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lowrank_lab.cli import compress_checks
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar
from lowrank_lab.comparison import EvalSettings, compare
from lowrank_lab.compress import CalibrationSettings, allocate, compress
from lowrank_lab.export import save_compressed
from lowrank_lab.models import ModelSpec, load_model


def register(sub) -> None:
    p = sub.add_parser("compress", help="factorize a model's linear layers under a budget or a plan, and measure it")
    add_model_argument(p)
    p.add_argument("--keep", type=float, default=None, help="fraction of linear-layer parameters kept (default 0.8)")
    p.add_argument("--method", default="whitened", choices=["svd", "whitened", "pca"], help="default whitened")
    p.add_argument("--allocate", default=None, choices=["uniform", "auto"], help="rank allocation (default auto)")
    p.add_argument("--plan", type=Path, help="a rank plan JSON (module name → rank) instead of --keep/--allocate")
    p.add_argument("--samples", type=int, default=32, help="calibration samples (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample (default 256)")
    p.add_argument("--calibration-text", type=Path, help="a UTF-8 text file instead of the built-in calibration split")
    p.add_argument("--eval-text", type=Path, help="a UTF-8 text file instead of the built-in evaluation split")
    p.add_argument("--eval-seq-len", type=int, default=None, help="tokens per perplexity block (default 256)")
    p.add_argument(
        "--eval-blocks", type=int, default=None, help="perplexity over at most this many blocks (default 32)"
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens generated per prompt (default 40)")
    p.add_argument("--no-eval", action="store_true", help="skip perplexity, generations, latency and memory")
    p.add_argument("--out", type=Path, help="write the compressed checkpoint to this folder")
    p.add_argument("--dtype", default=None, help="checkpoint dtype: fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint (and zip) lowrank_lab wrote in --out")
    add_json_argument(p)
    p.set_defaults(run=run)


def run(args) -> dict:
    inputs = compress_checks.check(args)  # every argument and file, before the model is loaded
    calibration = CalibrationSettings(samples=args.samples, seq_len=args.seq_len)
    if inputs.calibration_text is not None:
        calibration = CalibrationSettings(
            args.samples, args.seq_len, inputs.calibration_text, str(args.calibration_text)
        )
    sizes = dict(seq_len=args.eval_seq_len, max_blocks=args.eval_blocks, max_new_tokens=args.max_new_tokens)
    evaluation = EvalSettings(**sizes)
    if inputs.eval_text is not None:
        evaluation = EvalSettings(text=inputs.eval_text, source=str(args.eval_text), **sizes)
    with progress_bar("loading") as progress:
        loaded = load_model(ModelSpec(args.model), progress=progress)
    compress_checks.check_loaded(args, inputs, loaded)  # positions, tokenizer, plan, text lengths: before the work
    if inputs.plan is not None:
        plan, allocation = inputs.plan, f"plan file {args.plan}"
    else:
        with progress_bar(f"allocating ({args.allocate})") as progress:
            plan = allocate(loaded, args.keep, args.allocate, args.method, calibration, progress=progress)
        allocation = args.allocate
    with progress_bar(f"compressing ({args.method})") as progress:
        compressed = compress(loaded, plan, args.method, calibration, progress=progress)
    result = {
        "model": args.model,
        "method": args.method,
        "allocation": allocation,
        "keep": None if args.plan is not None else args.keep,
        "factorized": len(compressed.plan),
        "calibration": compressed.calibration,
    }
    comparison = None
    if not args.no_eval:
        with progress_bar("evaluating") as progress:
            comparison = compare(loaded, compressed, evaluation, progress=progress)
        result["generations"] = [dataclasses.asdict(g) for g in comparison.generations]
    result["figures"] = compressed.params.as_dict() | (comparison.figures() if comparison is not None else {})
    if args.out is not None:
        with progress_bar("saving") as progress:
            written = save_compressed(
                compressed,
                args.out,
                dtype=args.dtype,
                zip=args.zip,
                overwrite=args.overwrite,
                progress=progress,
                comparison=comparison,
            )
        result["out"] = str(written)
    if not args.json:
        _print_summary(result)
    return result


def _print_summary(result: dict) -> None:
    f = result["figures"]
    print(f"{result['model']}: {result['factorized']} layers factorized ({result['method']}, {result['allocation']})")
    if "params_dense" in f:
        print(f"parameters {f['params_dense']:,} → {f['params_compressed']:,}")
    if "perplexity_dense" in f:
        ratio = f["perplexity_compressed"] / f["perplexity_dense"]
        print(f"perplexity {f['perplexity_dense']:.3f} → {f['perplexity_compressed']:.3f} ({ratio:.2f}×)")
    if "latency_ms_dense" in f:
        print(f"forward latency {f['latency_ms_dense']:.1f} ms → {f['latency_ms_compressed']:.1f} ms")
    for g in result.get("generations", []):
        print(f"\n> {g['prompt']}\n  dense:      {g['dense']}\n  compressed: {g['compressed']}")
    if "out" in result:
        print(f"\nwrote {result['out']}")
