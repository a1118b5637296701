"""The run store: one SQLite database file in the cache folder, shared by every session and process.

Concurrency: each thread gets its own connection (a Streamlit server runs each session's
script in its own thread; SQLite connections must not be shared across threads), the database
is in WAL mode (readers never wait for a writer), and every write is one short ``BEGIN
IMMEDIATE`` transaction, so two sessions recording at once both land. A writer that finds the
database busy waits up to ``timeout`` seconds, then gives up with a clear message.

Bad files: a corrupt database, one written by a newer lowrank_lab, a read-only one or one
locked by another process raise :class:`~lowrank_lab.errors.RunStoreError` naming the file, what
is wrong and what to do; the file is never deleted, rewritten or "repaired". Callers (the app,
the command line) go on without the store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from lowrank_lab.errors import RunStoreError
from lowrank_lab.paths import cache_dir
from lowrank_lab.plan import RankPlan
from lowrank_lab.runs.artifact_files import Deleted, remove_owned
from lowrank_lab.runs.records import Run, RunRecord, RunRow, plan_digest
from lowrank_lab.runs.rows import artifacts_of, list_columns, paused_gc, run_row, where_clause
from lowrank_lab.runs.schema import MIGRATIONS, ROW_COLUMNS, SCHEMA_VERSION
from lowrank_lab.runs.sqlite_errors import FIX, store_error, translated

DB_NAME = "runs.sqlite3"
STORE_ENV = "LOWRANK_LAB_RUNS"  # another database file (the tests use a fresh one per session)
ARTIFACT_FOLDER = "runs"  # beside the database: runs/<uid>/<role>
DEFAULT_TIMEOUT = 5.0
_SELECT_ROWS = f"SELECT {', '.join(ROW_COLUMNS)} FROM runs"


def default_path() -> Path:
    """``$LOWRANK_LAB_RUNS`` if set, else ``runs.sqlite3`` in the lowrank_lab cache folder (``$LOWRANK_LAB_CACHE``)."""
    chosen = os.environ.get(STORE_ENV)
    return Path(chosen).expanduser() if chosen else cache_dir() / DB_NAME


def _statements(script: str) -> list[str]:
    # executescript() would commit the migration's transaction half way; run statements one by one.
    return [s.strip() for s in script.split(";") if s.strip()]


class RunStore:
    """The runs recorded on this machine (see the module docstring).

    Args:
        path: the database file; default :func:`default_path`. Created (with its schema) when
            missing; an older schema is migrated in place.
        timeout: seconds a write waits for another writer before giving up.

    Attributes:
        path: the database file.
        artifact_root: the folder of the runs' own artifacts (``runs/`` beside the database).
        read_only: True when the file can be read but not written: runs list, nothing records.

    Raises:
        RunStoreError: the file is corrupt, from a newer schema, locked, or cannot be created.
    """

    def __init__(self, path: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.artifact_root = self.path.parent / ARTIFACT_FOLDER
        self.timeout = timeout
        self.read_only = False
        self._local = threading.local()
        self._open()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self.path.exists() and not self.path.is_file():
            raise RunStoreError(f"the run store {self.path} is not a file; move it aside or set LOWRANK_LAB_RUNS to another file", "io")  # fmt: skip
        folder_writable = os.access(self.path.parent, os.W_OK)
        if not self.path.exists():
            if not folder_writable:
                raise RunStoreError(
                    f"the run store {self.path} cannot be created: {self.path.parent} is read-only; {FIX['read-only']}",
                    "read-only",
                )
        elif not (os.access(self.path, os.W_OK) and folder_writable):
            self.read_only = True  # WAL needs to write beside the file, too
        try:
            conn = self._conn()
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check failed)")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RunStoreError(
                    f"the run store {self.path} was written by a newer lowrank_lab (schema {version}; this one reads "
                    f"up to {SCHEMA_VERSION}); lowrank_lab left it untouched. Upgrade lowrank_lab, or point "
                    "LOWRANK_LAB_RUNS at another file to use a separate store",
                    "newer",
                )
            if version < SCHEMA_VERSION:
                if self.read_only:
                    raise RunStoreError(
                        f"the run store {self.path} needs an upgrade (schema {version} to {SCHEMA_VERSION}) but is "
                        f"read-only; {FIX['read-only']}",
                        "read-only",
                    )
                self._migrate(conn)
        except sqlite3.Error as err:
            self.close()
            raise store_error(self.path, err, "opening it") from None
        except RunStoreError:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, timeout=self.timeout)
        else:
            conn = sqlite3.connect(self.path, timeout=self.timeout)
        conn.isolation_level = None  # autocommit; transactions are explicit and short
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once, on the file
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for script in MIGRATIONS[version:]:
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise RunStoreError(f"the run store {self.path} is read-only, so nothing is recorded; {FIX['read-only']}", "read-only")  # fmt: skip
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot for the statements inside
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------
    def artifact_path(self, uid: str, role: str) -> Path:
        """Where a run's own artifact goes: ``runs/<uid>-<role>`` beside the database.

        One flat folder, so a list learns which artifacts are still there from one directory
        read instead of a ``stat`` per run.
        """
        return self.artifact_root / f"{uid}-{role}"

    @translated("recording a run")
    def record(self, record: RunRecord) -> int:
        """Store one run; returns its id.

        Raises:
            RunStoreError: the store is read-only, locked past the timeout, or broken.
        """
        data = {
            "plan": None if record.plan is None else record.plan.as_dict(),
            "settings": record.settings,
            "figures": record.figures,
            "prediction": record.prediction,
            "stages": list(record.stages),
        }
        values = {
            "uid": record.uid,
            "kind": record.kind,
            "created": record.created,
            "model": record.model,
            "model_digest": record.model_digest,
            "method": record.method,
            "allocation": record.allocation,
            "keep": record.keep,
            **list_columns(record),
            "plan_digest": plan_digest(record.plan),
            "origin": record.origin,
            "parent": record.parent,
        }
        sql = f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"
        with self._write() as conn:
            run_id = conn.execute(sql, tuple(values.values())).lastrowid
            conn.execute(
                "INSERT INTO run_data (run_id, data) VALUES (?, ?)",
                (run_id, json.dumps(data, allow_nan=False, separators=(",", ":"))),
            )
            conn.executemany(
                "INSERT INTO artifacts (run_id, role, path, owned) VALUES (?, ?, ?, ?)",
                [(run_id, a.role, a.path, int(a.owned)) for a in record.artifacts],
            )
        return run_id

    @translated("deleting a run")
    def delete(self, run_id: int, remove_artifacts: bool = True) -> Deleted:
        """Delete a run, and (by default) the files lowrank_lab saved for it.

        Only artifacts marked ``owned`` inside :attr:`artifact_root` are touched, and of those
        only the files their ownership manifest lists (``lowrank_lab_manifest.json``, written
        with them): a file someone added or changed there stays, and so does its folder. A
        folder the user chose (``--out``) is never touched. A run whose artifacts are already
        gone is deleted all the same.

        Returns:
            What was removed from disk, and what was kept (with why).

        Raises:
            RunStoreError: no such run, or the store is read-only, locked or broken.
        """
        with self._write() as conn:
            artifacts = artifacts_of(conn, [run_id]).get(run_id, ())
            if conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount == 0:
                raise RunStoreError(f"there is no run #{run_id} in {self.path} (deleted in another session?)", "unknown")  # fmt: skip
        removed, kept = [], []
        for a in artifacts if remove_artifacts else ():
            if not a.owned:
                continue
            why = remove_owned(Path(a.path), self.artifact_root)
            if why is None:
                removed.append(a.path)
            elif why:
                kept.append(f"{a.path}: {why}")
        return Deleted(tuple(removed), tuple(kept))

    # -- reading ---------------------------------------------------------------------------
    @translated("listing runs")
    def runs(self, model: str | None = None, kind: str | None = None) -> list[RunRow]:
        """Stored runs, newest first, optionally of one model and kind; each says which artifacts are missing."""
        where, args = where_clause(model, kind)
        with self._read() as conn, paused_gc():
            rows = conn.execute(f"{_SELECT_ROWS}{where} ORDER BY id DESC", args).fetchall()
            artifacts = artifacts_of(conn, None if not args else [r[0] for r in rows])
            present = self._present()
            return [run_row(r, artifacts.get(r[0], ()), present) for r in rows]

    def _present(self) -> tuple[str, set[str]]:
        """The artifact folder and the names in it now (one directory read for a whole list)."""
        try:
            return str(self.artifact_root), set(os.listdir(self.artifact_root))
        except OSError:
            return str(self.artifact_root), set()

    @translated("looking up a plan")
    def runs_with_plan(self, model: str, plan: RankPlan) -> list[RunRow]:
        """Compressions of ``model`` that factorized exactly ``plan`` (by content), newest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"{_SELECT_ROWS} WHERE model = ? AND plan_digest = ? AND kind = 'compression' ORDER BY id DESC",
                (model, plan_digest(plan)),
            ).fetchall()
            artifacts = artifacts_of(conn, [r[0] for r in rows])
        present = self._present()
        return [run_row(r, artifacts.get(r[0], ()), present) for r in rows]

    @translated("reading a run")
    def get(self, run_id: int) -> Run:
        """One run in full.

        Raises:
            RunStoreError: no such run (reason ``unknown``), or the store is broken.
        """
        with self._read() as conn:
            found = conn.execute(
                f"SELECT {', '.join('r.' + c for c in ROW_COLUMNS)}, d.data FROM runs r "
                "LEFT JOIN run_data d ON d.run_id = r.id WHERE r.id = ?",
                (run_id,),
            ).fetchone()
            if found is None:
                raise RunStoreError(f"there is no run #{run_id} in {self.path} (deleted in another session?)", "unknown")  # fmt: skip
            artifacts = artifacts_of(conn, [run_id]).get(run_id, ())
        data = json.loads(found[-1] or "{}")
        plan = data.get("plan")
        return Run(
            row=run_row(found[:-1], artifacts, self._present()),
            plan=None if plan is None else RankPlan(plan),
            settings=data.get("settings") or {},
            figures=data.get("figures") or {},
            prediction=data.get("prediction") or {},
            stages=tuple(data.get("stages") or ()),
        )

    @translated("looking up an artifact")
    def run_with_artifact(self, path: str | Path) -> int | None:
        """The newest run that saved (or exported to) ``path``, if any."""
        resolved = str(Path(path).expanduser().resolve())
        found = self._conn().execute("SELECT max(run_id) FROM artifacts WHERE path = ?", (resolved,)).fetchone()
        return found[0] if found else None

    @translated("reading the store's state")
    def signature(self, model: str | None = None) -> tuple[int, int]:
        """(number of runs, newest id), of one model or all: changes whenever a run is added or deleted."""
        where, args = where_clause(model, None)
        count, newest = self._conn().execute(f"SELECT count(*), max(id) FROM runs{where}", args).fetchone()
        return count, newest or 0

    @translated("counting runs")
    def count(self) -> int:
        return self._conn().execute("SELECT count(*) FROM runs").fetchone()[0]

    @translated("listing models")
    def models(self) -> list[str]:
        """The models that have runs, most recent first."""
        rows = self._conn().execute("SELECT model FROM runs GROUP BY model ORDER BY max(id) DESC").fetchall()
        return [r[0] for r in rows]
