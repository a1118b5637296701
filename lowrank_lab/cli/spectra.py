"""``spectra``: singular values and metrics of every weight matrix."""

from __future__ import annotations

import time
from pathlib import Path

from lowrank_lab.cli import checks
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar
from lowrank_lab.errors import SettingsError
from lowrank_lab.models import ModelSpec, load_model
from lowrank_lab.spectra import SpectrumCache, compute_spectra, write_spectra
from lowrank_lab.spectra.engine import check_spectra_path
from lowrank_lab.spectra.stream import stream_spectra


def register(sub) -> None:
    p = sub.add_parser("spectra", help="singular values and metrics of every weight matrix")
    add_model_argument(p)
    p.add_argument("--out", help="write the spectra to FILE.json (with singular values) or FILE.csv (metrics)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (never through a link)")
    p.add_argument("--no-cache", action="store_true", help="recompute, ignoring the spectrum cache")
    p.add_argument("--no-embeddings", action="store_true", help="skip embedding matrices")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--stream",
        action="store_true",
        help="read a local folder's safetensors one tensor at a time without building the model "
        "(for models larger than memory)",
    )
    add_json_argument(p)
    p.set_defaults(run=run)


def check(args) -> None:
    """Every argument, before the model is loaded."""
    if args.out is None:
        checks.needs(args, "--out", "overwrite")
    checks.exclusive(args, "stream", "device")
    args.device = checks.device(args.device)
    if args.stream:
        path = Path(args.model).expanduser()
        if not (path.is_dir() or (path.is_file() and path.suffix == ".safetensors")):
            raise SettingsError(
                f"--stream reads a local model folder or .safetensors file, and {args.model!r} is neither; "
                "drop --stream to load it"
            )
    if args.out is not None:
        check_spectra_path(args.out, args.overwrite, protect=args.model)


def run(args) -> dict:
    check(args)
    cache = SpectrumCache() if not args.no_cache else False
    if args.stream:
        title = args.model
        start = time.perf_counter()
        with progress_bar("spectra") as progress:
            spectra = stream_spectra(
                args.model, progress=progress, cache=cache, include_embeddings=not args.no_embeddings
            )
    else:
        with progress_bar("loading") as progress:
            loaded = load_model(ModelSpec(args.model), progress=progress)
        title = loaded.title
        start = time.perf_counter()
        with progress_bar("spectra") as progress:
            spectra = compute_spectra(
                loaded.model,
                progress=progress,
                cache=cache,
                device=args.device,
                include_embeddings=not args.no_embeddings,
            )
    seconds = time.perf_counter() - start
    if args.out:
        write_spectra(spectra, args.out, overwrite=args.overwrite, protect=args.model)
    if not args.json:
        print(f"{title}: {len(spectra)} matrices in {seconds:.2f} s")
        print(f"{'matrix':48} {'shape':>12} {'stable':>8} {'eff.':>8} {'r90':>6} {'r99':>6} {'>MP':>5}")
        for sp in spectra:
            m = sp.metrics
            shape = f"{sp.shape[0]}x{sp.shape[1]}"
            print(
                f"{sp.name[-48:]:48} {shape:>12} {m.stable_rank:8.1f} {m.effective_rank:8.1f} "
                f"{m.energy_rank_90:6d} {m.energy_rank_99:6d} {m.mp_outliers:5d}"
            )
        if args.out:
            print(f"wrote {args.out}")
    return {
        "model": args.model,
        "matrices": len(spectra),
        "seconds": round(seconds, 4),
        "out": args.out,
        "mean_stable_rank": sum(sp.metrics.stable_rank for sp in spectra) / len(spectra),
        "mean_effective_rank_fraction": sum(sp.metrics.effective_rank / sp.full_rank for sp in spectra) / len(spectra),
    }
