"""The command line: ``python -m lowrank_lab SUBCOMMAND ...``.

Every subcommand takes ``--json`` and then prints one JSON object (figures, paths written) as
its last line: strict JSON, where a number that is not finite is ``null`` and ``non_finite``
says why. Each subcommand lives in its own module with ``register(subparsers)``, which adds
its parser and sets ``run``: a function of the parsed arguments returning that object. A run
checks all its arguments (:mod:`lowrank_lab.cli.checks`) before it loads a model.

Exit status: 0 done; 2 bad input (one line ``error: ...`` naming the value and the fix, and
``{"ok": false, "error": ...}`` with ``--json``); 1 an internal error, which is a bug; 130
interrupted. No traceback is printed.
"""

from __future__ import annotations

import argparse
import errno
import sys

from lowrank_lab import strict_json
from lowrank_lab.cli import compress, evaluate, extract_lora, finetune, runs, spectra
from lowrank_lab.cli.common import is_main_process
from lowrank_lab.errors import LowrankLabError

SUBCOMMANDS = [spectra, compress, evaluate, finetune, extract_lora, runs]


class UsageError(Exception):
    """An argument argparse cannot parse (the message is argparse's own)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and exit; main() prints, in JSON too
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m lowrank_lab",
        description="Low-rank structure in transformer models, from the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _fail(message: str, command: str | None, as_json: bool, status: int, done: dict | None = None) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    if as_json and is_main_process():
        print(strict_json.dumps({"command": command, "ok": False, "error": message, **(done or {})}))
    return status


_OS_FIXES = {
    errno.ENOSPC: "free some disk space, or write somewhere else",
    errno.EDQUOT: "free some of your disk quota, or write somewhere else",
    errno.EACCES: "choose a place you may write to",
    errno.EPERM: "choose a place you may write to",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _os_message(err: OSError) -> str:
    """One line for an operating-system error: what failed, on which file (shortened), and the fix."""
    name = str(err.filename or "")
    if len(name) > 120:
        name = f"{name[:60]}…{name[-50:]}"
    where = f" ({name})" if name else ""
    return f"{err.strerror or type(err).__name__}{where}; {_OS_FIXES.get(err.errno, 'check that path and try again')}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 a bug, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        print(build_parser().format_usage().strip(), file=sys.stderr)
        return _fail(str(err), None, as_json, 2)
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    try:
        result = args.run(args)
    except LowrankLabError as err:  # ``result``: what was done before it stopped (a diverged fine-tune)
        return _fail(str(err), args.command, args.json, 2, getattr(err, "result", None))
    except KeyboardInterrupt:
        return _fail("interrupted; nothing half-written was kept", args.command, args.json, 130)
    except MemoryError:
        return _fail(
            "out of memory; use a smaller model, fewer samples or shorter sequences", args.command, args.json, 2
        )
    except OSError as err:  # the disk, not the input: full, read-only, gone
        return _fail(_os_message(err), args.command, args.json, 2)
    except Exception as err:  # noqa: BLE001 - the last guard: a bug is reported in one line, not a traceback
        return _fail(
            f"internal error ({type(err).__name__}: {err}); this is a bug in lowrank_lab, please report it "
            "with the command you ran",
            args.command,
            args.json,
            1,
        )
    if args.json and is_main_process():  # one JSON line from a multi-process launch
        print(strict_json.dumps({"command": args.command, "ok": True, **result}))
    return 0
