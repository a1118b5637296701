"""``runs``: list, show or delete the runs in the run store; and recording for ``compress``/``finetune``.

    python -m lowrank_lab runs --json                  # every run, newest first
    python -m lowrank_lab runs --model smollm2-135m    # one model's runs, as a table
    python -m lowrank_lab runs --show 12 --json        # one run in full
    python -m lowrank_lab runs --delete 12             # the run and the files lowrank_lab saved for it

``compress`` and ``finetune`` record what they make unless given ``--no-record``; a store that
cannot be used (corrupt, newer, read-only, locked) is reported on stderr and the command still
succeeds: its work is printed and saved as asked.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lowrank_lab.cli.common import add_json_argument
from lowrank_lab.errors import RunStoreError
from lowrank_lab.runs import KINDS, RunStore
from lowrank_lab.runs.records import RunRow


def register(sub) -> None:
    p = sub.add_parser("runs", help="list, show or delete recorded runs (the run store in the cache folder)")
    p.add_argument("--model", help="only this model's runs")
    p.add_argument("--kind", choices=KINDS, help="only runs of this kind")
    p.add_argument("--show", type=int, metavar="ID", help="print one run in full")
    p.add_argument("--delete", type=int, metavar="ID", help="delete a run and the files lowrank_lab saved for it")
    p.add_argument("--keep-files", action="store_true", help="with --delete: leave its saved files on disk")
    p.add_argument("--store", type=Path, help="the database file (default: runs.sqlite3 in the cache folder)")
    add_json_argument(p)
    p.set_defaults(run=run)


def add_record_argument(parser) -> None:
    parser.add_argument("--no-record", action="store_true", help="do not record this run in the run store")


def row_dict(row: RunRow) -> dict:
    """A run's row as JSON-able values (artifacts as dicts, with its status)."""
    out = dataclasses.asdict(row)
    out["status"] = row.status
    out["created_iso"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(row.created))
    return out


def run(args) -> dict:
    store = RunStore(args.store)
    if args.delete is not None:
        deleted = store.delete(args.delete, remove_artifacts=not args.keep_files)
        if not args.json:
            print(f"deleted run #{args.delete}" + (f" and {', '.join(deleted.removed)}" if deleted.removed else ""))
            for note in deleted.kept:
                print(f"kept {note}")
        return {"store": str(store.path), "deleted": args.delete, "removed": list(deleted.removed),
                "kept": list(deleted.kept)}  # fmt: skip
    if args.show is not None:
        found = store.get(args.show)
        result = {"store": str(store.path), "run": row_dict(found.row),
                  **{k: getattr(found, k) for k in ("settings", "figures", "prediction")},
                  "plan": None if found.plan is None else found.plan.as_dict(), "stages": list(found.stages)}  # fmt: skip
        if not args.json:
            _print_rows([found.row])
        return result
    rows = store.runs(model=args.model, kind=args.kind)
    if not args.json:
        _print_rows(rows)
        print(f"{len(rows)} run(s) in {store.path}")
    return {"store": str(store.path), "count": len(rows), "runs": [row_dict(r) for r in rows]}


def _fmt(value, pattern: str = "{}") -> str:
    return "–" if value is None else pattern.format(value)


def _print_rows(rows: list[RunRow]) -> None:
    head = f"{'id':>5} {'when':<16} {'kind':<11} {'model':<16} {'method':<9} {'ranks':<10} {'kept':>6} {'ppl':>10} {'predicted':>10}  status"  # noqa: E501
    print(head)
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        print(
            f"{r.id:>5} {when:<16} {r.kind:<11} {r.model[:16]:<16} {_fmt(r.method)[:9]:<9} "
            f"{_fmt(r.allocation)[:10]:<10} {_fmt(r.linear_kept, '{:.0%}'):>6} {_fmt(r.perplexity, '{:.2f}'):>10} "
            f"{_fmt(r.predicted_perplexity, '{:.2f}'):>10}  {r.status}"
        )


def record_safely(args, record: Callable[[RunStore], int]) -> dict:
    """Record a run unless ``--no-record``; a store problem is reported, never fatal.

    Returns:
        ``{"run": id}`` when recorded, ``{"run": None, "run_error": message}`` when the store
        could not take it, ``{}`` with ``--no-record``.
    """
    if getattr(args, "no_record", False):
        return {}
    try:
        run_id = record(RunStore())
    except RunStoreError as err:
        print(f"warning: not recorded: {err}", file=sys.stderr)
        return {"run": None, "run_error": str(err)}
    if not getattr(args, "json", False):
        print(f"recorded as run #{run_id} (python -m lowrank_lab runs)")
    return {"run": run_id}
