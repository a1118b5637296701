"""Rows of the store's tables as RunRow and Artifact objects, and a record's list columns."""

from __future__ import annotations

import gc
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from lowrank_lab.runs.records import Artifact, RunRecord, RunRow
from lowrank_lab.runs.schema import ROW_COLUMNS


def where_clause(model: str | None, kind: str | None) -> tuple[str, tuple]:
    clauses, args = [], []
    if model is not None:
        clauses.append("model = ?")
        args.append(model)
    if kind is not None:
        clauses.append("kind = ?")
        args.append(kind)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a list builds thousands of rows.

    The rows hold no reference cycles (reference counting frees them), but allocating tens of
    thousands of objects triggers full collections over the whole heap: 60% of the time of
    listing 10,000 runs (bench/runs_store.py). Collection resumes afterwards, unless something
    else had turned it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def artifacts_of(conn: sqlite3.Connection, ids: list[int] | None) -> dict[int, tuple[Artifact, ...]]:
    """run id → its artifacts, for the given runs (None: every run)."""
    if ids is None:
        found = conn.execute("SELECT run_id, role, path, owned FROM artifacts").fetchall()
    else:
        found = []
        for start in range(0, len(ids), 500):  # SQLite limits the number of parameters
            part = ids[start : start + 500]
            sql = f"SELECT run_id, role, path, owned FROM artifacts WHERE run_id IN ({', '.join('?' * len(part))})"
            found += conn.execute(sql, part).fetchall()
    out: dict[int, list[Artifact]] = {}
    for run_id, role, path, owned in found:
        artifact = object.__new__(Artifact)  # stored, so already checked: filled directly (see run_row)
        artifact.__dict__.update(role=role, path=path, owned=bool(owned))
        out.setdefault(run_id, []).append(artifact)
    return {k: tuple(v) for k, v in out.items()}


def run_row(values: tuple, artifacts: tuple[Artifact, ...], present: tuple[str, set[str]]) -> RunRow:
    """A stored run as a :class:`RunRow`; ``present`` is (the store's artifact folder, the names in it)."""
    # A list builds thousands of rows from our own database: they are filled directly, without
    # the frozen dataclass's setattr per field (a third of the time of listing 10,000 runs).
    row = object.__new__(RunRow)
    fields = row.__dict__
    fields.update(zip(ROW_COLUMNS, values))
    fields["artifacts"] = artifacts
    fields["missing"] = tuple(a.role for a in artifacts if not _exists(a, present))
    return row


def _first(figures: dict, *keys):
    return next((figures[k] for k in keys if figures.get(k) is not None), None)


def list_columns(record: RunRecord) -> dict:
    """The columns a list shows, read from the record's figures and prediction under their canonical keys."""
    f, p = record.figures, record.prediction
    linear_dense, linear_kept = f.get("linear_params_dense"), f.get("linear_params_compressed")
    return {
        "params_kept": _first(f, "params_compressed", "params_kept"),
        "params_dense": f.get("params_dense"),
        "linear_kept": linear_kept / linear_dense if linear_dense and linear_kept is not None else None,
        "perplexity": _first(f, "perplexity_compressed", "perplexity_after"),
        "perplexity_dense": _first(f, "perplexity_dense", "perplexity_before"),
        "predicted_perplexity": p.get("perplexity"),
        "predicted_low": p.get("perplexity_low"),
        "predicted_high": p.get("perplexity_high"),
        "predicted_loss_raw": p.get("raw_loss_increase"),
        "predicted_loss_anchored": p.get("anchored_loss_increase"),
    }


def _exists(artifact: Artifact, present: tuple[str, set[str]]) -> bool:
    folder, names = present
    head, name = os.path.split(artifact.path)
    if artifact.owned and head == folder:
        return name in names  # the store's own folder was read once for the whole list
    return os.path.exists(artifact.path)
