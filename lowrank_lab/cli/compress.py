"""``compress``: turn a budget (or a plan file) into a compressed model, measure it, optionally save it.

The work is one pipeline (:mod:`lowrank_lab.compress.pipeline`): allocate, compress block by
block, measure. ``--stream`` reads a model folder block by block and writes the checkpoint
block by block, so a model larger than memory compresses with memory bounded by one block.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from lowrank_lab.cli import checks, compress_checks
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar, progress_sink
from lowrank_lab.cli.runs import add_record_argument, record_safely
from lowrank_lab.comparison import EvalSettings
from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.errors import SettingsError
from lowrank_lab.models import ModelSpec, load_model
from lowrank_lab.runs.record import record_compression_run


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
    p.add_argument(
        "--stages", action="store_true", help="also measure perplexity after each stage (the gap waterfall; slower)"
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the model folder block by block and write --out block by block (models larger than memory; "
        "no evaluation)",
    )
    p.add_argument(
        "--distill",
        type=int,
        default=0,
        metavar="STEPS",
        help="after the block walk, train every factor STEPS Adam steps to match the dense model's next-token "
        "distributions on the calibration text (default 0: off; 60 took the built-in model from 1.31× to "
        "1.15× dense perplexity at --keep 0.8, 2.27× to 1.59× at --keep 0.6)",
    )
    p.add_argument("--distill-lr", type=float, default=None, help="distillation peak learning rate (default 1e-4)")
    p.add_argument(
        "--distill-batch", type=int, default=None, help="calibration blocks per distillation step (default 4)"
    )
    p.add_argument("--device", default="cpu", help="where the block work runs: cpu (default) or cuda")
    p.add_argument("--out", type=Path, help="write the compressed checkpoint to this folder")
    p.add_argument("--dtype", default=None, help="checkpoint dtype: fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint (and zip) lowrank_lab wrote in --out")
    add_record_argument(p)
    add_json_argument(p)
    p.set_defaults(run=run)


def _check_engine_options(args) -> str:
    """--device, --stream and --stages, before any work; returns the device."""
    device = checks.device(args.device)
    if args.stream:
        if args.out is None:
            raise SettingsError("--stream writes the checkpoint block by block, so it needs --out DIR")
        if args.zip:
            raise SettingsError("--zip is not available with --stream; zip the folder afterwards if you need one")
        if args.stages:
            raise SettingsError("--stages measures perplexity in memory; drop it with --stream")
        if args.distill:
            raise SettingsError(
                "--distill trains the compressed model in memory against the dense one, and --stream never holds "
                "either whole; drop --distill, or drop --stream for a model that fits in memory"
            )
        if not Path(args.model).expanduser().is_dir():
            raise SettingsError(
                f"--stream reads a model folder block by block, and {args.model!r} is not a folder; "
                "give a Hugging Face folder with safetensors weights, or drop --stream"
            )
    if args.stages and args.no_eval:
        raise SettingsError("--stages measures perplexity, which --no-eval turns off; drop one of them")
    return device


def job_from(args, inputs):
    """The :class:`CompressionJob` the checked arguments describe."""
    from lowrank_lab.compress.distill import DistillSettings
    from lowrank_lab.compress.pipeline import CompressionJob

    calibration = CalibrationSettings(samples=args.samples, seq_len=args.seq_len)
    if inputs.calibration_text is not None:
        calibration = CalibrationSettings(
            args.samples, args.seq_len, inputs.calibration_text, str(args.calibration_text)
        )
    evaluation = None
    if not args.no_eval and not args.stream:
        sizes = dict(seq_len=args.eval_seq_len, max_blocks=args.eval_blocks, max_new_tokens=args.max_new_tokens)
        evaluation = EvalSettings(**sizes)
        if inputs.eval_text is not None:
            evaluation = EvalSettings(text=inputs.eval_text, source=str(args.eval_text), **sizes)
    return CompressionJob(
        keep=args.keep,
        allocation=args.allocate,
        plan=inputs.plan,
        method=args.method,
        calibration=calibration,
        distill=DistillSettings(args.distill, args.distill_lr, args.distill_batch),
        device=args.device,
        evaluation=evaluation,
        stage_report=args.stages,
    )


def run(args) -> dict:
    from lowrank_lab.compress.pipeline import run_job
    from lowrank_lab.compress.stream import run_folder_job

    _check_engine_options(args)
    inputs = compress_checks.check(args)  # every argument and file, before the model is loaded
    job = job_from(args, inputs)
    if args.stream:
        with progress_sink("compressing") as sink:
            result = run_folder_job(Path(args.model).expanduser(), job, args.out, args.dtype, args.overwrite, sink)
        out = summary(args, job, result)
    else:
        with progress_bar("loading") as progress:
            loaded = load_model(ModelSpec(args.model), progress=progress)
        compress_checks.check_loaded(args, inputs, loaded)  # positions, tokenizer, plan, text lengths
        with progress_sink("compressing") as sink:
            result = run_job(loaded, job, sink)
        if result.distillation is not None and result.distillation.stopped:
            print(f"warning: {result.distillation.stopped}", file=sys.stderr)
        out = summary(args, job, result)
        if args.out is not None:
            from lowrank_lab.export import save_compressed

            with progress_bar("saving") as progress:
                written = save_compressed(
                    result.compressed,
                    args.out,
                    dtype=args.dtype,
                    zip=args.zip,
                    overwrite=args.overwrite,
                    progress=progress,
                    comparison=result.comparison,
                )
            out["out"] = str(written)

        def record(store):  # the checkpoint is kept in the store's folder unless --out saved it already
            stages = () if result.stages is None else result.stages.to_dict()["stages"]
            with progress_bar("recording (predicting from calibration)") as progress:
                return record_compression_run(
                    store, loaded, result.compressed, job.calibration, comparison=result.comparison,
                    evaluation=job.evaluation, progress=progress, stages=stages,
                    allocation=args.allocate if args.plan is None else "plan", keep=out["keep"], origin="cli",
                    save=args.out is None, exported_to=args.out,
                )  # fmt: skip

        out |= record_safely(args, record)
    if not args.json:
        _print_summary(out)
    return out


def summary(args, job, result) -> dict:
    """The JSON object of a run: settings, allocation, stages, figures, generations, seconds."""
    out = {
        "model": args.model,
        "method": job.method,
        "allocation": result.allocation.strategy if job.plan is None else f"plan file {args.plan}",
        "keep": None if job.plan is not None else job.keep,
        "factorized": len(result.plan),
        "calibration": {} if job.method == "svd" else job.calibration.describe(),
        "allocation_report": result.allocation.to_dict(),
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
    }
    if result.stages is not None:
        out["stages"] = result.stages.to_dict()
    if result.distillation is not None:
        out["distillation"] = result.distillation.to_dict()
    figures = result.params.as_dict() if result.params is not None else {}
    if result.comparison is not None:
        out["generations"] = [dataclasses.asdict(g) for g in result.comparison.generations]
        figures |= result.comparison.figures()
    out["figures"] = figures
    if result.out is not None:
        out["out"] = result.out
    return out


def _print_summary(result: dict) -> None:
    f = result["figures"]
    print(f"{result['model']}: {result['factorized']} layers factorized ({result['method']}, {result['allocation']})")
    for c in result["allocation_report"]["candidates"]:
        if c["calibration_loss"] is not None:
            mark = " (chosen)" if c["chosen"] else ""
            print(f"  candidate {c['name']}: calibration loss {c['calibration_loss']:.4f}{mark}")
    if "params_dense" in f:
        print(f"parameters {f['params_dense']:,} → {f['params_compressed']:,}")
    if "stages" in result:
        s = result["stages"]
        print(f"perplexity by stage (dense {s['dense_perplexity']:.3f}):")
        for stage in s["stages"]:
            print(f"  {stage['stage']:<28} {stage['perplexity']:9.3f}  ({stage['ratio']:.2f}×)")
    if "distillation" in result and result["distillation"]["stopped"]:
        print(f"distillation stopped: {result['distillation']['stopped']}")
    elif "distillation" in result:
        d = result["distillation"]
        print(f"distilled {d['steps']} steps ({d['tokens']:,} tokens): KL {d['kl_first']:.4f} → {d['kl_last']:.4f}")
    if "perplexity_dense" in f:
        ratio = f["perplexity_compressed"] / f["perplexity_dense"]
        print(f"perplexity {f['perplexity_dense']:.3f} → {f['perplexity_compressed']:.3f} ({ratio:.2f}×)")
    if "latency_ms_dense" in f:
        print(f"forward latency {f['latency_ms_dense']:.1f} ms → {f['latency_ms_compressed']:.1f} ms")
    for g in result.get("generations", []):
        print(f"\n> {g['prompt']}\n  dense:      {g['dense']}\n  compressed: {g['compressed']}")
    if "out" in result:
        print(f"\nwrote {result['out']}")
