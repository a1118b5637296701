"""Pieces every subcommand shares: the model and --json options, and a terminal progress bar."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from tqdm import tqdm

from lowrank_lab.models.spec import BUILTIN_MODELS, DEFAULT_MODEL, TINY_MODELS


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=(
            f"a built-in ({', '.join(BUILTIN_MODELS)}), a tiny test model ({', '.join(TINY_MODELS)}), "
            f"a local folder or .safetensors file, or a hub id (default: {DEFAULT_MODEL})"
        ),
    )


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


@contextmanager
def progress_bar(description: str):
    """Yield a progress callback: a tqdm bar on a terminal (stderr), silence otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    bar = tqdm(desc=description, unit="", file=sys.stderr, leave=False)

    def update(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[-40:], refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
