"""Pieces every subcommand shares: the model and --json options, and a terminal progress bar."""

from __future__ import annotations

import argparse
import os
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
    if not sys.stderr.isatty() or not is_main_process():
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


@contextmanager
def progress_sink(description: str):
    """Yield a sink for :class:`~lowrank_lab.progress.ProgressEvent`: a tqdm bar on a terminal, else None.

    The bar shows the whole job's share done, the current step and the time left.
    """
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(
        desc=description, total=1000, unit="", file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {postfix}"
    )

    def update(event) -> None:
        bar.n = int(event.fraction * 1000)
        left = "" if event.eta_s is None else f" · about {event.eta_s:.0f} s left"
        bar.set_postfix_str(f"{event.step[-50:]}{left}", refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def is_main_process() -> bool:
    """False in every process but the first of a multi-process launch (accelerate launch, torchrun, mpirun).

    Only the first process writes files and prints the JSON line, so a distributed run leaves
    one adapter and one result behind.
    """
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if var in os.environ:
            return os.environ[var] == "0"
    return True
