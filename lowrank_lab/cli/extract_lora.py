"""``extract-lora``: a PEFT LoRA adapter from the difference of two models (base → tuned)."""

from __future__ import annotations

from pathlib import Path

from lowrank_lab.cli.common import add_json_argument, progress_bar
from lowrank_lab.cli.runs import add_record_argument, record_safely
from lowrank_lab.errors import ComparisonError, SettingsError
from lowrank_lab.extraction import ExtractionSettings, extract_lora
from lowrank_lab.outputs import check_output_folder
from lowrank_lab.runs.record import record_extraction
from lowrank_lab.spectra import SpectrumCache
from lowrank_lab.spectra.delta import model_delta
from lowrank_lab.spectra.sources import open_source


def register(sub) -> None:
    p = sub.add_parser(
        "extract-lora",
        help="extract a PEFT LoRA adapter from a fine-tune: the top singular directions of each W_tuned − W_base",
    )
    p.add_argument("--base", required=True, help="the model the adapter goes on (a built-in, folder or checkpoint)")
    p.add_argument("--tuned", required=True, help="the model to reproduce (a fine-tune or merge of --base)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--energy", type=float, help="keep this fraction of each ΔW's energy Σσᵢ² (default 0.99)")
    how.add_argument("--rank", type=float, help="the same LoRA rank for every changed matrix")
    how.add_argument("--budget", type=float, help="the adapter holds at most this fraction of the changed parameters")
    p.add_argument("--out", type=Path, required=True, help="the adapter folder to write (PEFT format)")
    p.add_argument("--overwrite", action="store_true", help="replace an adapter folder written before")
    p.add_argument("--no-cache", action="store_true", help="recompute every ΔW spectrum, ignoring the cache")
    p.add_argument("--device", default=None, help="where the SVDs run: cpu or cuda (default: cpu)")
    add_record_argument(p)
    add_json_argument(p)
    p.set_defaults(run=run)


def _settings(args) -> ExtractionSettings:
    if args.rank is not None:
        return ExtractionSettings("rank", args.rank)
    if args.budget is not None:
        return ExtractionSettings("budget", args.budget)
    return ExtractionSettings("energy", 0.99 if args.energy is None else args.energy)


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.strip() == b.strip()


def run(args) -> dict:
    settings = _settings(args)  # every argument is checked before any model is read
    if _same(args.base, args.tuned):
        raise ComparisonError(
            f"--base and --tuned both name {args.base}: the change between a model and itself is zero; "
            "pass the fine-tuned model as --tuned"
        )
    if args.device not in (None, "cpu", "cuda"):
        raise SettingsError(f"--device {args.device!r}: use cpu or cuda")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SettingsError("--device cuda: no CUDA device is available here; leave --device out to use the CPU")
    # The adapter folder follows the ownership rules of lowrank_lab.outputs: never a folder we did
    # not write, never inside (or around) either model.
    out = check_output_folder(args.out, args.overwrite, protect=(args.base, args.tuned))
    with progress_bar("opening models") as progress:
        base, tuned = open_source(args.base, progress), open_source(args.tuned, progress)
    cache = False if args.no_cache else SpectrumCache()
    with progress_bar("ΔW spectra") as progress:
        delta = model_delta(base, tuned, progress=progress, cache=cache, device=args.device)
    with progress_bar("LoRA factors") as progress:
        result = extract_lora(
            base, tuned, delta, settings, folder=out, overwrite=args.overwrite,
            protect=(args.base, args.tuned), progress=progress,
        )  # fmt: skip
    if not args.json:
        est = result.estimate
        print(f"{args.base} → {args.tuned}: {len(delta.changed)} of {len(delta.matrices)} matrices changed")
        print(f"LoRA on {est.lora_modules} matrices ({settings.describe()}), {len(result.whole_modules)} carried whole")
        print(f"adapter {est.adapter_params:,} parameters; ΔW energy kept {est.energy_kept:.6f}")
        print(f"‖ΔW − B·A‖/‖ΔW‖ predicted {est.relative_error:.6f}, measured {result.measured_relative_error:.6f}")
        print(f"wrote {out} in {result.seconds:.2f} s")
    recorded = record_safely(args, lambda store: record_extraction(store, result, origin="cli"))
    return {**result.as_dict(), "matrices_changed": len(delta.changed), "matrices": len(delta.matrices), **recorded}
