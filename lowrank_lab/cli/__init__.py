"""The command line: ``python -m lowrank_lab SUBCOMMAND ...``.

Every subcommand takes ``--json`` and then prints one JSON object (figures, paths written) as
its last line. Each subcommand lives in its own module with ``register(subparsers)``, which
adds its parser and sets ``run``: a function of the parsed arguments returning that object.
"""

from __future__ import annotations

import argparse
import json
import sys

from lowrank_lab.cli import compress, evaluate, finetune, spectra
from lowrank_lab.cli.common import is_main_process
from lowrank_lab.errors import LowrankLabError

SUBCOMMANDS = [spectra, compress, evaluate, finetune]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lowrank_lab",
        description="Low-rank structure in transformer models, from the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except LowrankLabError as err:
        print(f"error: {err}", file=sys.stderr)
        if getattr(args, "json", False) and is_main_process():
            print(json.dumps({"command": args.command, "ok": False, "error": str(err)}))
        return 2
    if args.json and is_main_process():  # one JSON line from a multi-process launch
        print(json.dumps({"command": args.command, "ok": True, **result}, default=str))
    return 0
