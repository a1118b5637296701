"""Every check of ``compress``'s arguments, before the model is loaded and before the work.

Kept apart from :mod:`lowrank_lab.cli.compress` so the subcommand's body (the pipeline) can
change without touching what it refuses. :func:`check` runs first and reads every input file;
:func:`check_loaded` runs on the loaded model, before calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowrank_lab.cli import checks
from lowrank_lab.errors import SettingsError

DEFAULT_KEEP = 0.8
DEFAULT_ALLOCATE = "auto"
DEFAULT_DTYPE = "float32"
EVAL_DEFAULTS = {"eval_seq_len": 256, "eval_blocks": 32, "max_new_tokens": 40}


@dataclass(frozen=True)
class CompressInputs:
    """What the files given on the command line hold, read and checked before any work."""

    calibration_text: str | None = None
    eval_text: str | None = None
    plan: object | None = None  # a RankPlan


def check(args) -> CompressInputs:
    """Check every argument and path, fill the defaults, and read the input files.

    Raises:
        LowrankLabError: naming the option, the value and the fix.
    """
    if args.plan is not None:
        checks.exclusive(args, "plan", "keep", "allocate")
    args.keep = DEFAULT_KEEP if args.keep is None else args.keep
    args.allocate = DEFAULT_ALLOCATE if args.allocate is None else args.allocate
    checks.number(args.keep, "--keep", 0, 1, low_open=True, example="0.8 (keeps 80% of the linear parameters)")
    checks.integer(args.samples, "--samples", 1, 100_000, example=32)
    checks.integer(args.seq_len, "--seq-len", 2, example=256)
    checks.integer(args.distill, "--distill", 0, 100_000, example=60)
    if not args.distill:
        checks.needs(args, "--distill STEPS", "distill_lr", "distill_batch")
    from lowrank_lab.compress.distill import DistillSettings

    defaults = DistillSettings()
    args.distill_lr = defaults.lr if args.distill_lr is None else args.distill_lr
    args.distill_batch = defaults.batch_size if args.distill_batch is None else args.distill_batch
    checks.number(args.distill_lr, "--distill-lr", 0, 1, low_open=True, high_open=True, example="1e-4")
    checks.integer(args.distill_batch, "--distill-batch", 1, 4096, example=4)
    if args.no_eval:  # the sizes are harmless defaults to pass along; a text file to read is a contradiction
        checks.exclusive(args, "no_eval", "eval_text")
    for name, default in EVAL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    checks.integer(args.eval_seq_len, "--eval-seq-len", 2, example=256)
    checks.integer(args.eval_blocks, "--eval-blocks", 1, 100_000, example=32)
    checks.integer(args.max_new_tokens, "--max-new-tokens", 1, 4096, example=40)
    uses_calibration = args.method != "svd" or (args.plan is None and args.allocate == "auto") or args.distill > 0
    if args.calibration_text is not None and not uses_calibration:
        raise SettingsError(
            "--calibration-text is not used by --method svd with a --plan or --allocate uniform; "
            "drop it, or use --method whitened"
        )
    if args.out is None:
        checks.needs(args, "--out", "dtype", "zip", "overwrite")
    args.dtype = checks.dtype(args.dtype or DEFAULT_DTYPE)
    if args.out is not None:
        from lowrank_lab.export.archive import check_export_target

        check_export_target(args.out, args.overwrite, args.zip, protect=args.model)
    config = checks.peek_config(args.model)
    if uses_calibration:
        checks.fits_positions(args.seq_len, "--seq-len", config, args.model)
    if not args.no_eval:
        checks.fits_positions(args.eval_seq_len, "--eval-seq-len", config, args.model)
    return CompressInputs(
        calibration_text=checks.text_file(args.calibration_text, "--calibration-text")
        if args.calibration_text is not None
        else None,
        eval_text=checks.text_file(args.eval_text, "--eval-text") if args.eval_text is not None else None,
        plan=checks.plan_file(args.plan) if args.plan is not None else None,
    )


def check_loaded(args, inputs: CompressInputs, loaded) -> None:
    """What only the loaded model can tell, before calibration: positions, tokenizer, plan, text lengths."""
    from lowrank_lab.compress.apply import check_plan
    from lowrank_lab.data.text import builtin_text
    from lowrank_lab.matrices import weight_matrices
    from lowrank_lab.spectra.engine import check_finite

    for matrix in weight_matrices(loaded.model):
        check_finite(matrix)  # a damaged model is refused before calibration, whatever the method
    config = loaded.config.to_dict()
    uses_calibration = args.method != "svd" or (inputs.plan is None and args.allocate == "auto") or args.distill > 0
    if inputs.plan is not None:
        check_plan(loaded, inputs.plan)
    if inputs.plan is None and args.allocate == "auto" and loaded.task != "causal-lm":
        raise SettingsError(
            f"--allocate auto measures the language-model loss, and {loaded.title} is an encoder with no such "
            "loss; use --allocate uniform"
        )
    if uses_calibration:
        checks.fits_positions(args.seq_len, "--seq-len", config, loaded.title)
        checks.require_tokenizer(loaded, f"read calibration text (--method {args.method}); use --method svd")
        text = inputs.calibration_text if inputs.calibration_text is not None else builtin_text("calibration")
        what = (
            f"--calibration-text {args.calibration_text}"
            if inputs.calibration_text
            else "the built-in calibration text"
        )
        checks.enough_tokens(
            loaded.tokenizer,
            text,
            args.samples * args.seq_len,
            what,
            f"--samples {args.samples} × --seq-len {args.seq_len} need more; give a longer file or lower --samples or --seq-len",
        )
    if not args.no_eval and loaded.task == "causal-lm" and loaded.tokenizer is not None:
        checks.fits_positions(args.eval_seq_len, "--eval-seq-len", config, loaded.title)
        if inputs.eval_text is not None:
            checks.enough_tokens(
                loaded.tokenizer,
                inputs.eval_text,
                args.eval_seq_len,
                f"--eval-text {args.eval_text}",
                f"one block of --eval-seq-len {args.eval_seq_len} tokens is needed; give a longer file or lower --eval-seq-len",
            )
