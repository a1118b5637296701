"""``finetune``: a LoRA adapter on the original or a compressed model, saved in PEFT's format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lowrank_lab.cache import model_digest
from lowrank_lab.cli import checks
from lowrank_lab.cli.common import add_json_argument, is_main_process, progress_bar
from lowrank_lab.cli.runs import add_record_argument, record_safely
from lowrank_lab.data import BUILTIN_DATASETS, prepare, source_from_name_or_file
from lowrank_lab.errors import NonFiniteError, SettingsError
from lowrank_lab.export import save_adapter
from lowrank_lab.finetune import ALL_LINEAR, INITS, SCHEDULES, LoraSettings, StepInfo, finetune
from lowrank_lab.models import CompressedModel, LoadedModel, ModelSpec, load_compressed, load_model
from lowrank_lab.models.spec import BUILTIN_MODELS, DEFAULT_MODEL, TINY_MODELS
from lowrank_lab.outputs import check_output_folder
from lowrank_lab.runs.record import record_finetune

DEFAULT_STEPS = 50


def register(sub) -> None:
    p = sub.add_parser("finetune", help="train a LoRA adapter (on the original or a compressed model)")
    p.add_argument(
        "--model",
        default=None,
        help=(
            f"a built-in ({', '.join(BUILTIN_MODELS)}), a tiny test model ({', '.join(TINY_MODELS)}), "
            f"a local folder or .safetensors file, or a hub id (default: {DEFAULT_MODEL}, or with --compressed "
            "the model it was made from)"
        ),
    )
    p.add_argument(
        "--compressed", metavar="DIR", help="heal this compressed checkpoint (folder or .zip, made from --model)"
    )
    p.add_argument(
        "--data",
        default="domain-text",
        help=f"a built-in set ({', '.join(BUILTIN_DATASETS)}) or a .txt/.jsonl/.csv file (default domain-text)",
    )
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULT_STEPS})")
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
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder lowrank_lab wrote")
    add_record_argument(p)
    add_json_argument(p)
    p.set_defaults(run=run)


def _targets(text: str) -> str | tuple[str, ...]:
    if text.strip() == ALL_LINEAR:
        return ALL_LINEAR
    kinds = tuple(t.strip() for t in text.split(",") if t.strip())
    if not kinds:
        raise SettingsError(f"--targets {text!r} names no layer kind; use {ALL_LINEAR} or kinds such as q_proj,v_proj")
    return kinds


def settings_from(args) -> LoraSettings:
    """The LoRA settings of the arguments, each number checked under its option's name."""
    checks.exclusive(args, "steps", "epochs")
    checks.integer(args.r, "--r", 1, example=8)
    checks.number(args.alpha, "--alpha", 0, low_open=True, example="16 (2·r)")
    checks.number(args.dropout, "--dropout", 0, 1, high_open=True, example="0.05")
    checks.number(args.lr, "--lr", 0, 1, low_open=True, high_open=True, example="1e-3")
    checks.integer(args.warmup, "--warmup", 0)
    if args.steps is not None:
        checks.integer(args.steps, "--steps", 1, 1_000_000, example=DEFAULT_STEPS)
    if args.epochs is not None:
        checks.number(args.epochs, "--epochs", 0, 10_000, low_open=True, example="1")
    checks.integer(args.batch_size, "--batch-size", 1, 4096, example=4)
    checks.integer(args.max_seq_len, "--max-seq-len", 8, 8192, example=128)
    checks.integer(args.eval_every, "--eval-every", 0)
    checks.integer(args.seed, "--seed", 0, 2**32 - 1)
    steps = args.steps if args.steps is not None else (None if args.epochs is not None else DEFAULT_STEPS)
    return LoraSettings(
        r=args.r,
        alpha=args.alpha,
        dropout=args.dropout,
        targets=_targets(args.targets),
        init=args.init,
        learning_rate=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup,
        steps=steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        eval_every=args.eval_every,
    )


def _same_source(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.strip() == b.strip()


def check_compressed_source(args) -> None:
    """``--compressed`` is a checkpoint made from ``--model`` (``--model`` defaults to its source)."""
    config = checks.compressed_source(args.compressed)
    source = str(config["lowrank"].get("source") or "")
    if args.model is None:
        if not source:
            raise SettingsError(f"--compressed {args.compressed} does not record its source model; pass --model")
        args.model = source
        return
    if source and not _same_source(source, args.model):
        raise SettingsError(
            f"--compressed {args.compressed} was made from {source!r}, not from --model {args.model!r}; "
            f"pass --model {source} (or the checkpoint made from {args.model})"
        )
    model_config = checks.peek_config(args.model)
    if model_config:
        for key in ("model_type", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "vocab_size"):
            if key in model_config and key in config and model_config[key] != config[key]:
                raise SettingsError(
                    f"--compressed {args.compressed} does not fit --model {args.model}: its {key} is {config[key]}, "
                    f"the model's {model_config[key]}; pass the model it was made from"
                )


def check(args) -> tuple[LoraSettings, object]:
    """Every argument and path, before a model is loaded; returns the settings and the training source."""
    settings = settings_from(args)
    if args.out is None:
        checks.needs(args, "--out", "overwrite")
    if args.compressed is not None:
        check_compressed_source(args)
    args.model = args.model or DEFAULT_MODEL
    checks.fits_positions(settings.max_seq_len, "--max-seq-len", checks.peek_config(args.model), args.model)
    source = source_from_name_or_file(args.data)
    if args.out is not None:
        check_output_folder(args.out, args.overwrite, protect=(args.model, args.compressed))
    return settings, source


def compressed_base(path: str, source: ModelSpec) -> CompressedModel:
    """A compressed checkpoint (folder or .zip) as the :class:`CompressedModel` to heal, made from ``source``."""
    compressed = load_compressed(path)
    if not compressed.plan:
        raise SettingsError(f"--compressed {path}: no factorized layer in it; pass a lowrank_lab compressed checkpoint")
    return dataclasses.replace(compressed, source=source)


def check_loaded(args, base, settings: LoraSettings) -> None:
    """What only the loaded model can tell, before the data is tokenized."""
    title = getattr(base, "title", args.compressed)
    if isinstance(base, LoadedModel) and base.task != "causal-lm":
        raise SettingsError(
            f"{title} is an encoder with no language-model head, so it cannot be fine-tuned on text; "
            "choose a causal language model (e.g. smollm2-135m)"
        )
    if base.tokenizer is None:
        if isinstance(base, LoadedModel):
            checks.require_tokenizer(base, "read training text")
        raise SettingsError(f"--compressed {args.compressed} has no tokenizer files, so it cannot read training text")
    checks.fits_positions(settings.max_seq_len, "--max-seq-len", base.model.config.to_dict(), str(title))


def _bar_step(progress):
    def on_step(info: StepInfo) -> None:
        if progress is not None:
            message = f"loss {info.loss:.3f} · {info.tokens_per_s:.0f} tok/s · {info.seconds_left:.0f} s left"
            progress(info.step, info.total_steps, message)

    return on_step


def run(args) -> dict:
    settings, source = check(args)
    with progress_bar("loading") as progress:
        spec = ModelSpec(args.model)
        base: LoadedModel | CompressedModel = (
            compressed_base(args.compressed, spec) if args.compressed else load_model(spec, progress=progress)
        )
    check_loaded(args, base, settings)
    with progress_bar("tokenizing") as progress:
        data = prepare(source, base.tokenizer, settings.max_seq_len, seed=settings.seed, progress=progress)
    with progress_bar("training") as progress:
        adapter = finetune(base, data, settings, on_step=_bar_step(progress))
    out = None
    main = is_main_process()
    if args.out and main:  # under a multi-process launch only the first process writes
        out = str(save_adapter(adapter, args.out, overwrite=args.overwrite))
    report = adapter.report

    def record(store):  # the adapter is kept in the store's folder unless --out saved it already
        parent = store.run_with_artifact(args.compressed) if args.compressed else None
        digest = model_digest(base.model) if isinstance(base, LoadedModel) else None
        return record_finetune(
            store, adapter, save=out is None, exported_to=out, data=source.name, parent=parent,
            model_digest=digest, origin="cli",
        )  # fmt: skip

    recorded = record_safely(args, record) if main else {}  # one record from a multi-process launch
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
    result = {
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
        **recorded,
    }
    if report.diverged:
        saved = f" (saved to {out})" if out else ""
        raise _Diverged(f"{report.stop_reason}{saved}", result)
    return result


class _Diverged(NonFiniteError):
    """Training stopped at a non-finite number: exit 2, with what was done."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def _processes() -> int:
    """How many processes trained together (1 unless started by a multi-process launcher)."""
    from accelerate import PartialState

    return PartialState().num_processes
