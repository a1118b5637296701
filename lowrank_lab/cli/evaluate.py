"""``evaluate``: reload any checkpoint and print its perplexity on the built-in evaluation text."""

from __future__ import annotations

import time

from lowrank_lab.checkpoint.format import factorized_modules
from lowrank_lab.cli import checks
from lowrank_lab.cli.common import add_json_argument, add_model_argument, progress_bar
from lowrank_lab.data import builtin_text
from lowrank_lab.data.text import BUILTIN_EVAL_SOURCE
from lowrank_lab.errors import SettingsError
from lowrank_lab.evaluate import block_perplexity, eval_blocks
from lowrank_lab.models import ModelSpec, load_model


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="perplexity of a model (built-in, Hugging Face folder or compressed checkpoint) on the built-in text",
    )
    add_model_argument(p)
    p.add_argument("--seq-len", type=int, default=256, help="tokens per scored block (default 256)")
    p.add_argument("--max-blocks", type=int, default=32, help="score at most this many blocks (default 32)")
    p.add_argument("--dtype", default="float32", help="load in float32, bfloat16 or float16 (default float32)")
    add_json_argument(p)
    p.set_defaults(run=run)


def check(args) -> None:
    """Every argument, before the model is loaded."""
    checks.integer(args.seq_len, "--seq-len", 2, example=256)
    checks.integer(args.max_blocks, "--max-blocks", 1, example=32)
    args.dtype = checks.dtype(args.dtype)
    checks.fits_positions(args.seq_len, "--seq-len", checks.peek_config(args.model), args.model)


def check_loaded(args, loaded) -> None:
    """What only the loaded model can tell, before any work."""
    if loaded.task != "causal-lm":
        raise SettingsError(
            f"{loaded.title} is an encoder with no language-model head, so it has no perplexity; "
            "evaluate a causal language model (e.g. smollm2-135m)"
        )
    checks.require_tokenizer(loaded, "read the evaluation text")
    checks.fits_positions(args.seq_len, "--seq-len", loaded.config.to_dict(), loaded.title)


def run(args) -> dict:
    check(args)
    with progress_bar("loading") as progress:
        loaded = load_model(ModelSpec(args.model, dtype=args.dtype), progress=progress)
    check_loaded(args, loaded)
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
