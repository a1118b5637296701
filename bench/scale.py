"""Benchmark: compressing 7B-shaped Llama checkpoints from their folders, one block in memory.

    python bench/scale.py [--blocks 2 8] [--keep 0.6] [--samples 4] [--seq-len 256] [--workdir DIR]
    python bench/scale.py --project     # a 7B block's float64 factorization time, from LAPACK rates here

For each block count it writes a synthetic Llama checkpoint with 7B-shaped layers (hidden 4096,
intermediate 11008, 32 heads, 8 key-value heads, vocabulary 32000, untied head; random weights
stored bf16 in safetensors shards of at most 2 GB, written tensor by tensor), then runs

    python -m lowrank_lab compress --model DIR --stream --method whitened --allocate uniform \
        --keep 0.6 --samples 4 --seq-len 256 --dtype bf16 --out OUT --json

in a fresh process under ``/usr/bin/time -v`` and reports its peak RSS and wall time. Seconds
per block are the difference of the two runs' compression times over the difference of their
block counts, so the fixed costs (embeddings, head, tokenizer, writing) cancel. The calibration
text is the built-in split read by a small tokenizer copied into the folder (its token ids lie
inside the 32000-token vocabulary). Checkpoints and outputs are deleted after each run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32000,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)
SHARD_BYTES = 2 * 10**9
# A smoke-test shape (--small): the same code path in seconds.
SMALL = dict(SHAPE, hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=2)


def write_checkpoint(folder: Path, blocks: int, shape: dict, seed: int = 0) -> int:
    """Write a random bf16 Llama checkpoint with ``blocks`` decoder layers; returns its bytes on disk."""
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    from lowrank_lab.models.tiny import tiny_tokenizer

    config = LlamaConfig(num_hidden_layers=blocks, dtype="bfloat16", **shape)
    config.architectures = ["LlamaForCausalLM"]
    with init_empty_weights():
        skeleton = LlamaForCausalLM(config)
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    gen = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size, weight_map, written = 0, {}, 0
    names = [(n, p.shape) for n, p in skeleton.state_dict().items()]

    def flush() -> None:
        nonlocal written
        if shards[-1]:
            path = folder / f"shard-{len(shards):05d}.safetensors"
            save_file(shards[-1], str(path), metadata={"format": "pt"})
            written += path.stat().st_size
            weight_map.update({n: path.name for n in shards[-1]})
            shards[-1] = {}

    for name, shape in names:
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            fan_in = shape[-1]
            t = (torch.randn(shape, generator=gen) / fan_in**0.5).to(torch.bfloat16)
        nbytes = t.numel() * 2
        if size + nbytes > SHARD_BYTES:
            flush()
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    flush()
    index = {"metadata": {"total_size": written}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return written


def run_compress(model: Path, out: Path, args) -> dict:
    """One compression in a fresh process under /usr/bin/time -v: peak RSS, wall time, the JSON line."""
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "lowrank_lab",
        "compress",
        "--model",
        str(model),
        "--stream",
        "--method",
        "whitened",
        "--allocate",
        "uniform",
        "--keep",
        str(args.keep),
        "--samples",
        str(args.samples),
        "--seq-len",
        str(args.seq_len),
        "--dtype",
        "bf16",
        "--out",
        str(out),
        "--json",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"compress failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"rss_gb": rss_kb / 2**20, "wall_s": wall, "result": result}


def lapack_projection(hidden: int = 4096, inter: int = 11008, kv: int = 1024, n: int = 1536) -> dict:
    """Seconds the float64 factorizations of one 7B-shaped block take here, projected from rates at size ``n``.

    The engine's LAPACK work per block, per layer group (q/k/v, o, gate/up, down): one Cholesky
    of the group's input Gram matrix; per layer W·C (out·in² multiply-adds), a triangular solve
    (in²·out), the SVD through the eigenvectors of the smaller Gram matrix (its product, one
    eigh, one more product) and A = Vᵀ S⁻¹ (k·in²). Each kind of call is timed (CPU seconds,
    one thread, as the engine runs them) at size ``n`` and scaled by the cube of the size.
    """
    from lowrank_lab.compress.factorize import lapack_thread

    def cpu(f) -> float:
        f()
        start = time.process_time()
        f()
        return time.process_time() - start

    with lapack_thread():
        a = torch.randn(n, n, dtype=torch.float64)
        g = a @ a.T + n * torch.eye(n, dtype=torch.float64)
        low = torch.linalg.cholesky(g)
        t_mm = cpu(lambda: a @ a) / n**3  # per multiply-add
        t_chol = cpu(lambda: torch.linalg.cholesky(g)) / n**3
        t_solve = cpu(lambda: torch.linalg.solve_triangular(low, a, upper=False)) / n**3
        t_eigh = cpu(lambda: torch.linalg.eigh(g)) / n**3
    layers = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden), (inter, hidden), (inter, hidden)]
    layers.append((hidden, inter))  # (out, in): q, k, v, o, gate, up, down
    seconds = sum(t_chol * d**3 for d in (hidden, hidden, hidden, inter))  # one Cholesky per group
    for out, inp in layers:
        k = min(out, inp)
        seconds += t_mm * out * inp * inp + t_solve * inp * inp * out  # W·C, the solve for W·C·S⁻ᵀ
        seconds += t_mm * k * k * max(out, inp) * 2 + t_eigh * k**3  # Gram, eigh, the other factor
        seconds += t_solve * k * inp * inp  # A = Vᵀ S⁻¹
    return {"matmul_gflops": 2e-9 / t_mm, "block_s": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where checkpoints are written (default: a temp dir)"
    )
    parser.add_argument("--small", action="store_true", help="hidden 256 instead of 4096: a smoke test")
    parser.add_argument(
        "--project", action="store_true", help="only project a 7B block's factorization time from LAPACK rates here"
    )
    args = parser.parse_args(argv)
    if args.project:
        p = lapack_projection()
        print(
            f"float64 matmul {p['matmul_gflops']:.0f} GFLOP/s on one thread; a 7B-shaped block's factorizations: "
            f"about {p['block_s']:.0f} s; 32 blocks: about {32 * p['block_s'] / 3600:.1f} h (plus the block passes)"
        )
        return

    work = Path(tempfile.mkdtemp(prefix="lowrank-scale-", dir=args.workdir))
    rows = []
    try:
        for blocks in args.blocks:
            folder, out = work / f"llama7b-{blocks}", work / f"llama7b-{blocks}-lowrank"
            start = time.perf_counter()
            size = write_checkpoint(folder, blocks, SMALL if args.small else SHAPE)
            write_s = time.perf_counter() - start
            print(f"{blocks} blocks: wrote {size / 1e9:.2f} GB in {write_s:.0f}s", flush=True)
            run = run_compress(folder, out, args)
            out_size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
            seconds = run["result"]["seconds"]["compress"]
            rows.append((blocks, size, out_size, run["rss_gb"], run["wall_s"], seconds))
            print(
                f"{blocks} blocks: peak RSS {run['rss_gb']:.2f} GiB, wall {run['wall_s']:.0f}s "
                f"(compression {seconds:.0f}s), output {out_size / 1e9:.2f} GB",
                flush=True,
            )
            shutil.rmtree(folder)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{'blocks':>6} {'checkpoint GB':>13} {'output GB':>9} {'peak RSS GiB':>12} {'wall s':>7} {'compress s':>10}"
    )
    for blocks, size, out_size, rss, wall, seconds in rows:
        print(f"{blocks:>6} {size / 1e9:>13.2f} {out_size / 1e9:>9.2f} {rss:>12.2f} {wall:>7.0f} {seconds:>10.0f}")
    if len(rows) >= 2:
        (b0, *_, r0, _, s0), (b1, *_, r1, _, s1) = rows[0], rows[-1]
        per_block = (s1 - s0) / (b1 - b0)
        print(f"\npeak RSS {b1} blocks / {b0} blocks: {r1 / r0:.3f}")
        print(
            f"seconds per block (marginal): {per_block:.0f}; a 32-block 7B model: about {32 * per_block / 60:.0f} min"
        )


if __name__ == "__main__":
    main()
