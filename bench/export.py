"""Benchmark: the compressed checkpoint of smollm2-135m at 80% of its linear parameters.

    python bench/export.py [--model smollm2-135m] [--keep 0.8] [--repeats 3] [--blocks 8]

Factorizes every linear layer with a plain truncated SVD so the factors hold ``--keep`` of its
parameters (r = floor(keep·m·n/(m+n))), then for float32, float16 and bfloat16:
  * size: model.safetensors and the whole folder, against the bound
    kept parameters × bytes + tokenizer files (+ what is left: config, card, loader, header),
    and against the dense model written by ``save_pretrained`` in the same dtype (baseline);
  * round trip: ``load_compressed`` of the folder — stored tensors against the in-memory
    model cast to that dtype (bit-exact?) and the max abs logit difference against the
    in-memory float32 model on real text; perplexity of the reloaded model;
  * time: median ``save_compressed`` / ``load_compressed`` against ``save_pretrained`` /
    ``from_pretrained`` of the dense model (baseline) in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import load_model  # noqa: E402
from lowrank_lab.data import builtin_text, token_blocks  # noqa: E402
from lowrank_lab.dtypes import DTYPES  # noqa: E402
from lowrank_lab.evaluate import perplexity  # noqa: E402
from lowrank_lab.export import save_compressed  # noqa: E402
from lowrank_lab.export.bundle import tokenizer_bytes  # noqa: E402
from lowrank_lab.lowrank import LowRankLinear, set_submodule  # noqa: E402
from lowrank_lab.matrices import weight_matrices  # noqa: E402
from lowrank_lab.models import CompressedModel, ParamCounts, load_compressed  # noqa: E402
from lowrank_lab.plan import RankPlan  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def truncated_svd(loaded, keep: float) -> CompressedModel:
    """Every non-embedding linear layer → LowRankLinear with ``keep`` of its parameters (plain SVD)."""
    model = loaded.copy()
    ranks = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LAPACK on a shared two-core machine is far faster on one thread
    for w in weight_matrices(model, include_embeddings=False):
        m, n = w.shape
        rank = max(1, int(keep * m * n / (m + n)))
        u, s, vh = torch.linalg.svd(w.matrix().double(), full_matrices=False)  # (m, k), (k,), (k, n)
        bias = model.get_submodule(w.name).bias
        layer = LowRankLinear.from_factors((u[:, :rank] * s[:rank]).float(), vh[:rank].float(), bias)
        set_submodule(model, w.name, layer)
        ranks[w.name] = rank
    torch.set_num_threads(threads)
    return CompressedModel(model, loaded.tokenizer, loaded.spec, RankPlan(ranks), "svd")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def prepare(args):
    """Load, factorize, and measure the figures the model card carries."""
    loaded = load_model(args.model)
    start = time.perf_counter()
    compressed = truncated_svd(loaded, args.keep)
    svd_seconds = time.perf_counter() - start
    kept = sum(p.numel() for p in compressed.model.parameters())
    linear_dense = sum(w.params for w in weight_matrices(loaded.model, include_embeddings=False))
    low = [m for m in compressed.model.modules() if isinstance(m, LowRankLinear)]
    linear_kept = sum(m.rank * (m.in_features + m.out_features) for m in low)
    compressed = replace(compressed, params=ParamCounts(loaded.n_params, kept, linear_dense, linear_kept))
    text = builtin_text("evaluation")
    figures = {}
    if args.blocks:
        figures["perplexity_dense"] = perplexity(loaded.model, loaded.tokenizer, text, max_blocks=args.blocks)
        figures["perplexity_compressed"] = perplexity(compressed.model, loaded.tokenizer, text, max_blocks=args.blocks)
    print(
        f"{args.model}: {loaded.n_params:,} parameters; plain truncated SVD of {len(low)} linear layers, {svd_seconds:.0f} s"
    )
    print(f"linear parameters kept {linear_kept:,} / {linear_dense:,} = {linear_kept / linear_dense:.3f}")
    print(f"model parameters kept {kept:,} / {loaded.n_params:,} = {kept / loaded.n_params:.3f}")
    if args.blocks:
        print(
            f"perplexity ({args.blocks}×256 tokens of the built-in evaluation text): "
            f"dense {figures['perplexity_dense']:.3f}, compressed {figures['perplexity_compressed']:.1f}"
        )
    return loaded, compressed, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--keep", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=8, help="perplexity blocks of 256 tokens (0: skip)")
    args = parser.parse_args()

    loaded, compressed, text = prepare(args)
    ids = token_blocks(loaded.tokenizer, text, 2, 128)  # (2, 128) real text
    ref = Reference(ids, logits(compressed.model, ids), logits(loaded.model, ids), tokenizer_bytes(loaded.tokenizer))
    print(
        f"tokenizer files: {ref.tokenizer_bytes:,} bytes; max |logit| of the compressed model {ref.compressed.abs().max():.1f}\n"
    )
    sizes = [
        f"{'dtype':9} {'weights B':>12} {'bound B':>12} {'folder B':>12} {'over bound':>10} {'dense B':>12} "
        f"{'size ratio':>10} {'bit-exact':>9} {'max|Δlogit|':>11} {'dense Δ':>9} {'ppl':>8}"
    ]
    times = [
        f"{'dtype':9} {'save_compressed s':>17} {'save_pretrained s':>17} {'ratio':>6} "
        f"{'load_compressed s':>17} {'from_pretrained s':>17} {'ratio':>6}"
    ]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for dtype in DTYPES:
            size_row, time_row = measure(dtype, Path(tmp), loaded, compressed, ref, text, args)
            sizes.append(size_row)
            times.append(time_row)
    print("\n".join(sizes))
    print(
        "\nbound = kept parameters × bytes + tokenizer files; 'over bound' = config, card, loader, plan, header;\n"
        "max|Δlogit| = reloaded vs the in-memory float32 compressed model; 'dense Δ' = the same for the dense\n"
        "model cast to that dtype (the rounding baseline)\n"
    )
    print("\n".join(times))
    print("(save_pretrained baseline includes casting the dense model to the dtype, as save_compressed does)")


@dataclass(frozen=True)
class Reference:
    ids: torch.Tensor  # (2, 128) token ids of real text
    compressed: torch.Tensor  # logits of the in-memory float32 compressed model
    dense: torch.Tensor  # logits of the dense float32 model
    tokenizer_bytes: int


def measure(dtype: str, tmp: Path, loaded, compressed, ref: Reference, text: str, args) -> tuple[str, str]:
    """Save and reload in ``dtype``; the dense original saved and loaded the same way is the baseline."""
    from transformers import AutoModelForCausalLM

    target = getattr(torch, dtype)
    kept = sum(p.numel() for p in compressed.model.parameters())
    folder, dense_dir = tmp / f"ckpt-{dtype}", tmp / f"dense-{dtype}"
    save_s, _ = timed(partial(save_compressed, compressed, folder, dtype=dtype, overwrite=True), args.repeats)
    load_s, reloaded = timed(partial(load_compressed, folder), args.repeats)
    model = reloaded.model
    dense_save_s = statistics.median(cast_and_save(loaded, target, dense_dir) for _ in range(args.repeats))
    dense_load_s, dense = timed(partial(AutoModelForCausalLM.from_pretrained, dense_dir, dtype=target), args.repeats)
    mine = compressed.model.state_dict()
    exact = all(torch.equal(t, mine[k].to(target)) for k, t in model.state_dict().items())
    diff = (logits(model.float(), ref.ids) - ref.compressed).abs().max().item()
    dense_diff = (logits(dense.float(), ref.ids) - ref.dense).abs().max().item()
    ppl = perplexity(model.float(), loaded.tokenizer, text, max_blocks=args.blocks) if args.blocks else float("nan")
    weights = (folder / "model.safetensors").stat().st_size
    total = folder_bytes(folder)
    bound = kept * target.itemsize + ref.tokenizer_bytes
    dense_bytes = (dense_dir / "model.safetensors").stat().st_size
    size_row = (
        f"{dtype:9} {weights:12,} {bound:12,} {total:12,} {total - bound:10,} {dense_bytes:12,} "
        f"{weights / dense_bytes:10.3f} {str(exact):>9} {diff:11.2e} {dense_diff:9.2e} {ppl:8.1f}"
    )
    time_row = (
        f"{dtype:9} {save_s:17.3f} {dense_save_s:17.3f} {save_s / dense_save_s:6.2f} "
        f"{load_s:17.3f} {dense_load_s:17.3f} {load_s / dense_load_s:6.2f}"
    )
    return size_row, time_row


def cast_and_save(loaded, target: torch.dtype, folder: Path) -> float:
    """Seconds to cast a fresh copy of the dense model to ``target`` and ``save_pretrained`` it."""
    model = loaded.copy()
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    model.to(target)
    model.save_pretrained(folder)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
