"""``finetune``: a LoRA adapter on the original or a compressed model, saved in PEFT's format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lowrank_lab.artifacts import CompressedModel
from lowrank_lab.cli.common import add_json_argument, add_model_argument, is_main_process, progress_bar
from lowrank_lab.data import BUILTIN_DATASETS, prepare, source_from_name_or_file
from lowrank_lab.errors import SettingsError
from lowrank_lab.finetune import ALL_LINEAR, INITS, SCHEDULES, LoraSettings, StepInfo, finetune
from lowrank_lab.models import LoadedModel, ModelSpec, load_model


def register(sub) -> None:
    p = sub.add_parser("finetune", help="train a LoRA adapter (on the original or a compressed model)")
    add_model_argument(p)
    p.add_argument("--compressed", metavar="DIR", help="heal this compressed checkpoint (made from --model)")
    p.add_argument(
        "--data",
        default="domain-text",
        help=f"a built-in set ({', '.join(BUILTIN_DATASETS)}) or a .txt/.jsonl/.csv file (default domain-text)",
    )
    p.add_argument("--steps", type=int, default=50, help="optimizer steps (default 50)")
    p.add_argument("--epochs", type=float, help="passes over the data instead of --steps")
    p.add_argument("--r", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    p.add_argument("--targets", default=ALL_LINEAR, help=f"{ALL_LINEAR} or kinds, e.g. q_proj,v_proj")
    p.add_argument("--init", default="default", choices=INITS, help="adapter initialisation (default: PEFT's)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--schedule", default="linear", choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps (default 0)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default 4)")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per example (default 128)")
    p.add_argument("--eval-every", type=int, default=10, help="validation loss every N steps (0: before/after)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="ADAPTER_DIR", help="save the adapter here (PEFT format)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    add_json_argument(p)
    p.set_defaults(run=run)


def settings_from(args) -> LoraSettings:
    targets = args.targets if args.targets == ALL_LINEAR else tuple(t.strip() for t in args.targets.split(",") if t)
    return LoraSettings(
        r=args.r,
        alpha=args.alpha,
        dropout=args.dropout,
        targets=targets,
        init=args.init,
        learning_rate=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        steps=None if args.epochs is not None else args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        eval_every=args.eval_every,
    )


def compressed_base(folder: str, source: ModelSpec) -> CompressedModel:
    """A compressed checkpoint folder as the :class:`CompressedModel` to heal."""
    from lowrank_lab.export.checkpoint import ranks_of
    from lowrank_lab.export.loader import load_checkpoint

    path = Path(folder).expanduser()
    loaded = load_model(ModelSpec(str(path)))
    if not ranks_of(loaded.model):
        raise SettingsError(
            f"--compressed {folder}: no factorized layer in it; pass a lowrank_lab compressed checkpoint"
        )
    _, section = load_checkpoint(path)
    return CompressedModel(
        loaded.model, loaded.tokenizer, source, ranks_of(loaded.model), section.method, dict(section.calibration)
    )


def _bar_step(progress):
    def on_step(info: StepInfo) -> None:
        if progress is not None:
            message = f"loss {info.loss:.3f} · {info.tokens_per_s:.0f} tok/s · {info.seconds_left:.0f} s left"
            progress(info.step, info.total_steps, message)

    return on_step


def run(args) -> dict:
    settings = settings_from(args)
    source = source_from_name_or_file(args.data)
    with progress_bar("loading") as progress:
        spec = ModelSpec(args.model)
        base: LoadedModel | CompressedModel = (
            compressed_base(args.compressed, spec) if args.compressed else load_model(spec, progress=progress)
        )
    data = prepare(source, base.tokenizer, settings.max_seq_len, seed=settings.seed)
    with progress_bar("training") as progress:
        adapter = finetune(base, data, settings, on_step=_bar_step(progress))
    out = None
    main = is_main_process()
    if args.out and main:  # under a multi-process launch only the first process writes
        from lowrank_lab.export import save_adapter

        out = str(save_adapter(adapter, args.out, overwrite=args.overwrite))
    report = adapter.report
    if not args.json and main:
        print(
            f"LoRA r={settings.r} on the {adapter.base} {args.model}: {report.steps_done} steps, "
            f"{report.tokens:,} tokens at {report.tokens_per_s:.0f} tokens/s"
        )
        print(
            f"validation loss {report.val_loss_before:.4f} → {report.val_loss_after:.4f}, "
            f"perplexity {report.perplexity_before:.2f} → {report.perplexity_after:.2f}"
        )
        if out:
            print(f"wrote {out}")
    return {
        "model": args.model,
        "base": adapter.base,
        "compressed": args.compressed,
        "data": source.name,
        "train_examples": len(data.train),
        "validation_examples": len(data.validation),
        "settings": dataclasses.asdict(settings),
        **report.figures(),
        "processes": _processes(),
        "out": out,
    }


def _processes() -> int:
    """How many processes trained together (1 unless started by a multi-process launcher)."""
    from accelerate import PartialState

    return PartialState().num_processes
