"""``finetune``: a LoRA adapter on the original or a compressed model, saved in PEFT's format."""

from __future__ import annotations

import dataclasses

from lowrank_lab.cache import model_digest
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar
from lowrank_lab.cli.runs import add_record_argument, record_safely
from lowrank_lab.data import BUILTIN_DATASETS, prepare, source_from_name_or_file
from lowrank_lab.errors import SettingsError
from lowrank_lab.export import save_adapter
from lowrank_lab.finetune import ALL_LINEAR, INITS, SCHEDULES, LoraSettings, StepInfo, finetune
from lowrank_lab.models import CompressedModel, LoadedModel, ModelSpec, load_compressed, load_model
from lowrank_lab.runs.record import record_finetune


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
    p.add_argument("--targets", default=ALL_LINEAR, help=f"{ALL_LINEAR} or layer names, e.g. q_proj,v_proj")
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
    add_record_argument(p)
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
    """A compressed checkpoint folder as the :class:`CompressedModel` to heal, made from ``source``."""
    compressed = load_compressed(folder)
    if not compressed.plan:
        raise SettingsError(
            f"--compressed {folder}: no factorized layer in it; pass a lowrank_lab compressed checkpoint"
        )
    return dataclasses.replace(compressed, source=source)


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
    if args.out:
        out = str(save_adapter(adapter, args.out, overwrite=args.overwrite))
    report = adapter.report

    def record(store):  # the adapter is kept in the store's folder unless --out saved it already
        parent = store.run_with_artifact(args.compressed) if args.compressed else None
        digest = model_digest(base.model) if isinstance(base, LoadedModel) else None
        return record_finetune(
            store, adapter, save=out is None, exported_to=out, data=source.name, parent=parent,
            model_digest=digest, origin="cli",
        )  # fmt: skip

    recorded = record_safely(args, record)
    if not args.json:
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
        "out": out,
        **recorded,
    }
