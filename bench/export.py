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
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab import load_model  # noqa: E402
from lowrank_lab.artifacts import CompressedModel  # noqa: E402
from lowrank_lab.data import builtin_text, token_blocks  # noqa: E402
from lowrank_lab.evaluate import perplexity  # noqa: E402
from lowrank_lab.export import load_compressed, save_compressed  # noqa: E402
from lowrank_lab.export.bundle import tokenizer_bytes  # noqa: E402
from lowrank_lab.lowrank import LowRankLinear, set_submodule  # noqa: E402
from lowrank_lab.matrices import weight_matrices  # noqa: E402
from lowrank_lab.plan import RankPlan  # noqa: E402

DTYPES = ("float32", "float16", "bfloat16")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--keep", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=8, help="perplexity blocks of 256 tokens (0: skip)")
    args = parser.parse_args()

    loaded = load_model(args.model)
    start = time.perf_counter()
    compressed = truncated_svd(loaded, args.keep)
    svd_seconds = time.perf_counter() - start
    text = builtin_text("evaluation")
    ids = token_blocks(loaded.tokenizer, text, 2, 128)  # (2, 128) real text
    reference = logits(compressed.model, ids)
    kept = sum(p.numel() for p in compressed.model.parameters())
    linear_dense = sum(w.params for w in weight_matrices(loaded.model, include_embeddings=False))
    linear_kept = sum(
        m.rank * (m.in_features + m.out_features) for m in compressed.model.modules() if isinstance(m, LowRankLinear)
    )
    tok = tokenizer_bytes(loaded.tokenizer)
    figures = {"params_dense": loaded.n_params, "params_compressed": kept}
    figures |= {"linear_params_dense": linear_dense, "linear_params_compressed": linear_kept}
    if args.blocks:
        ppl = lambda m: perplexity(m, loaded.tokenizer, text, max_blocks=args.blocks)  # noqa: E731
        figures |= {"perplexity_dense": ppl(loaded.model), "perplexity_compressed": ppl(compressed.model)}
        figures |= {"eval_text": "built-in evaluation split", "eval_tokens": args.blocks * 256}
    compressed.figures.update(figures)

    print(
        f"{args.model}: {loaded.n_params:,} parameters; truncated SVD of {len(compressed.plan)} linear layers in {svd_seconds:.1f} s"
    )
    print(
        f"linear parameters kept {linear_kept:,} / {linear_dense:,} = {linear_kept / linear_dense:.3f}; model {kept:,} ({kept / loaded.n_params:.3f})"
    )
    if args.blocks:
        print(
            f"perplexity ({args.blocks}×256 tokens): dense {figures['perplexity_dense']:.3f}, compressed {figures['perplexity_compressed']:.3f}"
        )
    print(f"tokenizer files: {tok:,} bytes\n")
    header = (
        f"{'dtype':9} {'weights B':>12} {'bound B':>12} {'folder B':>12} {'over bound':>10} {'dense B':>12} "
        f"{'size ratio':>10} {'bit-exact':>9} {'max|Δlogit|':>11} {'ppl':>8}"
    )
    rows, times = [header], []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for dtype in DTYPES:
            row, timing = measure(dtype, Path(tmp), loaded, compressed, ids, reference, text, tok, args)
            rows.append(row)
            times.append(timing)
    print("\n".join(rows))
    print("\n(bound = kept parameters × bytes + tokenizer files; 'over bound' = config, card, loader, plan, header)\n")
    print(
        f"{'dtype':9} {'save_compressed s':>17} {'save_pretrained s':>17} {'ratio':>6} "
        f"{'load_compressed s':>17} {'from_pretrained s':>17} {'ratio':>6}"
    )
    for dtype, s, ds, ld, dl in times:
        print(f"{dtype:9} {s:17.3f} {ds:17.3f} {s / ds:6.2f} {ld:17.3f} {dl:17.3f} {ld / dl:6.2f}")


def measure(dtype, tmp: Path, loaded, compressed, ids, reference, text, tok: int, args) -> tuple[str, tuple]:
    """Save and reload in ``dtype``; the dense original saved and loaded the same way is the baseline."""
    from transformers import AutoModelForCausalLM

    target = getattr(torch, dtype)
    kept = sum(p.numel() for p in compressed.model.parameters())
    folder, dense_dir = tmp / f"ckpt-{dtype}", tmp / f"dense-{dtype}"
    save_s, _ = timed(partial(save_compressed, compressed, folder, dtype=dtype, overwrite=True), args.repeats)
    load_s, model = timed(partial(load_compressed, folder), args.repeats)
    dense_model = loaded.copy().to(target)
    dense_save_s, _ = timed(partial(save_pretrained_fresh, dense_model, dense_dir), args.repeats)
    dense_load_s, _ = timed(partial(AutoModelForCausalLM.from_pretrained, dense_dir, dtype=target), args.repeats)
    mine = compressed.model.state_dict()
    exact = all(torch.equal(t, mine[k].to(target)) for k, t in model.state_dict().items())
    diff = (logits(model.float(), ids) - reference).abs().max().item()
    ppl = perplexity(model.float(), loaded.tokenizer, text, max_blocks=args.blocks) if args.blocks else float("nan")
    weights = (folder / "model.safetensors").stat().st_size
    total = folder_bytes(folder)
    bound = kept * target.itemsize + tok
    dense_bytes = (dense_dir / "model.safetensors").stat().st_size
    row = (
        f"{dtype:9} {weights:12,} {bound:12,} {total:12,} {total - bound:10,} {dense_bytes:12,} "
        f"{weights / dense_bytes:10.3f} {str(exact):>9} {diff:11.2e} {ppl:8.3f}"
    )
    return row, (dtype, save_s, dense_save_s, load_s, dense_load_s)


def save_pretrained_fresh(model, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)


if __name__ == "__main__":
    main()
