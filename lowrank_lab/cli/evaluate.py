"""``evaluate``: reload any checkpoint and print its perplexity on the built-in evaluation text."""

from __future__ import annotations

import time

from lowrank_lab.checkpoint.format import factorized_modules
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar
from lowrank_lab.data import builtin_text
from lowrank_lab.data.text import BUILTIN_EVAL_SOURCE
from lowrank_lab.dtypes import DTYPES
from lowrank_lab.errors import SettingsError
from lowrank_lab.evaluate import block_perplexity, check_lm_head, eval_blocks
from lowrank_lab.models import ModelSpec, load_model


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="perplexity of a model (built-in, Hugging Face folder or compressed checkpoint) on the built-in text",
    )
    add_model_argument(p)
    p.add_argument("--seq-len", type=int, default=256, help="tokens per scored block (default 256)")
    p.add_argument("--max-blocks", type=int, default=32, help="score at most this many blocks (default 32)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="load in this dtype")
    add_json_argument(p)
    p.set_defaults(run=run)


def run(args) -> dict:
    if args.seq_len < 2 or args.max_blocks < 1:
        raise SettingsError(
            f"--seq-len {args.seq_len} / --max-blocks {args.max_blocks}: use --seq-len 2 or more and --max-blocks 1 or more"
        )
    with progress_bar("loading") as progress:
        loaded = load_model(ModelSpec(args.model, dtype=args.dtype), progress=progress)
    check_lm_head(loaded.model)
    blocks = eval_blocks(loaded.tokenizer, builtin_text("evaluation"), args.seq_len, args.max_blocks)
    start = time.perf_counter()
    with progress_bar("perplexity") as progress:
        ppl = block_perplexity(loaded.model, blocks, progress=progress)
    seconds = time.perf_counter() - start
    n_blocks = blocks.shape[0]
    factorized = len(factorized_modules(loaded.model))
    if not args.json:
        layers = f"{factorized} factorized layers" if factorized else "dense"
        print(f"{loaded.title} ({layers}, {loaded.n_params / 1e6:.2f}M parameters)")
        print(
            f"perplexity {ppl:.3f} on the {BUILTIN_EVAL_SOURCE}, {n_blocks} blocks of {args.seq_len} tokens, {seconds:.1f} s"
        )
    return {
        "model": args.model,
        "title": loaded.title,
        "params": loaded.n_params,
        "factorized_layers": factorized,
        "perplexity": ppl,
        "eval_text": BUILTIN_EVAL_SOURCE,
        "eval_tokens": n_blocks * args.seq_len,
        "seq_len": args.seq_len,
        "blocks": n_blocks,
        "seconds": round(seconds, 3),
    }
