"""The run store: records round-trip, migrate on open, survive concurrent writers, and refuse bad
files (corrupt, newer, read-only, locked) with a clear message, touching nothing."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lowrank_lab.errors import RunStoreError, SettingsError
from lowrank_lab.outputs import write_manifest
from lowrank_lab.plan import RankPlan
from lowrank_lab.runs import SCHEMA_VERSION, Artifact, RunRecord, RunStore
from lowrank_lab.runs.frontier import fit_from_runs
from lowrank_lab.runs.schema import V1


def _record(model="tiny-llama", **kw) -> RunRecord:
    base = dict(
        kind="compression",
        model=model,
        method="whitened",
        allocation="uniform",
        keep=0.8,
        plan=RankPlan({"model.layers.0.mlp.up_proj": 8}),
        figures={"params_dense": 1000, "params_compressed": 800, "linear_params_dense": 600,
                 "linear_params_compressed": 400, "perplexity_dense": 10.0, "perplexity_compressed": 12.5},
        prediction={"perplexity": 12.0, "perplexity_low": 11.0, "perplexity_high": 13.5},
    )  # fmt: skip
    return RunRecord(**(base | kw))


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


def test_a_run_round_trips_with_its_plan_figures_and_prediction(store):
    stages = ({"stage": "truncate", "perplexity": 20.0}, {"stage": "refit", "perplexity": 12.5})
    run_id = store.record(_record(settings={"calibration": {"samples": 32}}, stages=stages, model_digest="abc"))
    run = store.get(run_id)
    assert run.plan == RankPlan({"model.layers.0.mlp.up_proj": 8})
    assert run.settings == {"calibration": {"samples": 32}}
    assert run.stages == ({"stage": "truncate", "perplexity": 20.0}, {"stage": "refit", "perplexity": 12.5})
    row = run.row
    assert (row.kind, row.model, row.model_digest, row.method, row.allocation, row.keep) == (
        "compression", "tiny-llama", "abc", "whitened", "uniform", 0.8)  # fmt: skip
    assert (row.params_kept, row.params_dense, row.perplexity, row.perplexity_dense) == (800, 1000, 12.5, 10.0)
    assert row.linear_kept == pytest.approx(400 / 600)
    assert (row.predicted_perplexity, row.predicted_low, row.predicted_high) == (12.0, 11.0, 13.5)
    assert row.status == "no files"


def test_listing_is_newest_first_and_filters_by_model_and_kind(store):
    a = store.record(_record("tiny-llama"))
    b = store.record(_record("tiny-gpt2"))
    c = store.record(_record("tiny-llama", kind="finetune", plan=None, keep=None))
    assert [r.id for r in store.runs()] == [c, b, a]
    assert [r.id for r in store.runs(model="tiny-llama")] == [c, a]
    assert [r.id for r in store.runs(model="tiny-llama", kind="compression")] == [a]
    assert store.models() == ["tiny-llama", "tiny-gpt2"]
    assert store.count() == 3


def test_a_plan_is_found_by_content(store):
    plan = RankPlan({"b": 4, "a": 2})
    run_id = store.record(_record(plan={"a": 2, "b": 4}))
    store.record(_record(plan={"a": 2, "b": 5}))
    assert [r.id for r in store.runs_with_plan("tiny-llama", plan)] == [run_id]
    assert store.runs_with_plan("tiny-gpt2", plan) == []


def test_non_finite_figures_are_stored_as_not_measured(store):
    run = store.get(store.record(_record(figures={"perplexity_compressed": float("inf"), "x": float("nan")})))
    assert run.figures == {"perplexity_compressed": None, "x": None}
    assert run.row.perplexity is None


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(kind="training"), "unknown run kind"),
        (dict(origin="web"), "unknown run origin"),
        (dict(model=""), "needs the model"),
        (dict(keep=1.5), "keep=1.5"),
        (dict(keep=0), "keep=0"),
        (dict(figures={"x": object()}), "figures.x holds a object"),
        (dict(artifacts=(Artifact("checkpoint", "/a"), Artifact("checkpoint", "/b"))), "one artifact per role"),
        (dict(parent="3"), "parent must be a run id"),
    ],
)
def test_a_bad_record_is_refused_before_anything_is_stored(store, change, words):
    with pytest.raises(SettingsError, match=words):
        store.record(_record(**change))
    assert store.count() == 0


def test_an_older_schema_is_migrated_on_open_and_keeps_its_runs(tmp_path):
    path = tmp_path / "runs.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1 + "PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO runs (uid, kind, created, model, method, origin, perplexity) "
        "VALUES ('old1', 'compression', 1.0, 'tiny-llama', 'svd', 'cli', 42.0)"
    )
    conn.execute('INSERT INTO run_data (run_id, data) VALUES (1, \'{"plan": {"a": 3}}\')')
    conn.commit()
    conn.close()
    store = RunStore(path)
    (row,) = store.runs()
    assert (row.uid, row.method, row.perplexity, row.predicted_perplexity) == ("old1", "svd", 42.0, None)
    assert store.get(row.id).plan == RankPlan({"a": 3})
    store.record(_record())  # the new columns are there
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_new_store_is_in_wal_mode(store):
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _unchanged(path: Path):
    before = path.read_bytes()
    return lambda: path.read_bytes() == before


def test_a_store_from_a_newer_lowrank_lab_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "runs.sqlite3"
    RunStore(path).record(_record())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    same = _unchanged(path)
    with pytest.raises(RunStoreError, match=f"newer lowrank_lab \\(schema {SCHEMA_VERSION + 5}") as err:
        RunStore(path)
    assert err.value.reason == "newer"
    assert same()


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is not sqlite at all\n" * 100)
    same = _unchanged(path)
    with pytest.raises(RunStoreError, match="not a readable SQLite database") as err:
        RunStore(path)
    assert err.value.reason == "corrupt"
    assert "move it aside" in str(err.value)
    assert same() and sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite3"]


def test_a_database_with_damaged_pages_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "runs.sqlite3"
    store = RunStore(path)
    for i in range(200):
        store.record(_record(settings={"pad": "x" * 500, "i": i}))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 6 * page] = os.urandom(3 * page)  # keep the header, garble b-tree pages
    path.write_bytes(bytes(data))
    same = _unchanged(path)
    with pytest.raises(RunStoreError) as err:
        RunStore(path)
    assert err.value.reason == "corrupt"
    assert same()


def test_a_folder_in_place_of_the_file_is_refused(tmp_path):
    (tmp_path / "runs.sqlite3").mkdir()
    with pytest.raises(RunStoreError, match="is not a file"):
        RunStore(tmp_path / "runs.sqlite3")


_HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE runs SET model = model")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    """
)


def test_a_store_locked_by_another_process_is_reported_and_works_again_after(tmp_path):
    path = tmp_path / "runs.sqlite3"
    first = RunStore(path)
    first.record(_record())
    first.close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunStoreError, match="is locked") as err:
            RunStore(path, timeout=0.2)
        assert err.value.reason == "locked" and "another process" in str(err.value)
    finally:
        holder.communicate("\n", timeout=30)
    store = RunStore(path)
    assert store.count() == 1


def test_a_write_that_waits_too_long_for_a_lock_fails_clearly_and_records_nothing(tmp_path):
    path = tmp_path / "runs.sqlite3"
    store = RunStore(path, timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer mid-transaction
    try:
        with pytest.raises(RunStoreError, match="is locked while recording a run"):
            store.record(_record())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.count() == 0
    store.record(_record())
    assert store.count() == 1


_READ_ONLY = textwrap.dedent(
    """
    import sys
    from lowrank_lab.errors import RunStoreError
    from lowrank_lab.runs import RunRecord, RunStore
    store = RunStore(sys.argv[1])
    print("read_only", store.read_only, "runs", len(store.runs()))
    try:
        store.record(RunRecord("export", "tiny-llama"))
    except RunStoreError as err:
        print("refused", err.reason, str(err))
    """
)


def _without_root_override():
    """In the child, before exec: drop root's right to ignore file permissions (CAP_DAC_*)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the bounding set at exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _as_user(script: str, path: Path) -> subprocess.CompletedProcess:
    """Run ``script`` on ``path`` in a child that file permissions bind (even when the tests run as root)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    drop = _without_root_override if os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env,
                          timeout=300, preexec_fn=drop)  # fmt: skip


def test_a_read_only_store_lists_runs_and_refuses_to_record(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "runs.sqlite3"
    store = RunStore(path)
    store.record(_record())
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # a read-only WAL file needs its -shm: leave none
    conn.close()
    path.chmod(0o444)
    folder.chmod(0o555)
    tmp_path.chmod(0o755)
    same = _unchanged(path)
    try:
        out = _as_user(_READ_ONLY, path)
    finally:
        folder.chmod(0o755)
    assert "read_only True runs 1" in out.stdout, out.stderr
    assert "refused read-only" in out.stdout and "nothing is recorded" in out.stdout
    assert same()


def test_a_store_cannot_be_created_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    script = "import sys\nfrom lowrank_lab.runs import RunStore\ntry:\n    RunStore(sys.argv[1])\nexcept Exception as err:\n    print(type(err).__name__, err.reason, err)"
    try:
        out = _as_user(script, folder / "runs.sqlite3")
    finally:
        folder.chmod(0o755)
    assert "RunStoreError read-only" in out.stdout and "cannot be created" in out.stdout, out.stderr
    assert list(folder.iterdir()) == []


def test_two_sessions_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path / "runs.sqlite3"
    shared = RunStore(path)  # one server: every session's thread shares the store object
    other = RunStore(path)  # and a second process's store on the same file
    per_writer, errors = 150, []
    barrier = threading.Barrier(3)

    def write(store: RunStore, tag: str):
        try:
            barrier.wait()
            for i in range(per_writer):
                store.record(_record(settings={"writer": tag, "i": i}, uid=f"{tag}-{i}"))
        except Exception as err:  # noqa: BLE001 - the assertion below shows it
            errors.append(err)

    threads = [threading.Thread(target=write, args=(s, t)) for s, t in ((shared, "a"), (shared, "b"), (other, "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    uids = {r.uid for r in shared.runs()}
    assert uids == {f"{t}-{i}" for t in "abc" for i in range(per_writer)}
    assert len({r.id for r in other.runs()}) == 3 * per_writer


def test_removed_artifacts_show_as_missing_and_the_run_can_be_deleted(store):
    folder = _saved(store.artifact_path("u1", "checkpoint"), {"config.json": b"{}"})
    run_id = store.record(_record(uid="u1", artifacts=(Artifact("checkpoint", str(folder)),)))
    assert store.runs()[0].status == "ok"
    shutil.rmtree(folder)
    row = store.runs()[0]
    assert row.status == "missing" and row.missing == ("checkpoint",)
    assert store.delete(run_id).removed == ()
    assert store.count() == 0


def _saved(folder: Path, files: dict[str, bytes]) -> Path:
    """A folder as lowrank_lab writes one: its files and their ownership manifest."""
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    write_manifest(folder, "test")
    return folder


def test_deleting_removes_only_the_store_s_own_artifacts(store, tmp_path):
    own = _saved(store.artifact_path("u2", "checkpoint"), {"model.safetensors": b"x", "base/config.json": b"{}"})
    users = _saved(tmp_path / "my-export", {"config.json": b"{}"})  # the user's --out: recorded, not owned
    outside = _saved(tmp_path / "elsewhere", {"a": b"1"})  # marked owned but outside the store's folder
    artifacts = (Artifact("checkpoint", str(own)), Artifact("export", str(users), owned=False),
                 Artifact("adapter", str(outside)))  # fmt: skip
    run_id = store.record(_record(uid="u2", artifacts=artifacts))
    deleted = store.delete(run_id)
    assert deleted.removed == (str(own),) and "outside the store's folder" in deleted.kept[0]
    assert not own.exists() and list(store.artifact_root.iterdir()) == []
    assert (users / "config.json").exists() and (outside / "a").exists()
    with pytest.raises(RunStoreError, match=f"no run #{run_id}") as err:
        store.delete(run_id)
    assert err.value.reason == "unknown"


def test_deleting_keeps_files_lowrank_lab_did_not_write(store):
    own = _saved(store.artifact_path("u3", "adapter"), {"adapter_model.safetensors": b"xy", "README.md": b"r"})
    (own / "my-notes.txt").write_text("mine")  # added by hand
    (own / "README.md").write_bytes(b"edited by hand")  # changed since it was written
    bare = store.artifact_path("u3", "checkpoint")  # no manifest at all: nothing in it is known to be ours
    bare.mkdir()
    (bare / "weights.bin").write_bytes(b"?")
    run_id = store.record(
        _record(uid="u3", artifacts=(Artifact("adapter", str(own)), Artifact("checkpoint", str(bare))))
    )
    deleted = store.delete(run_id)
    assert deleted.removed == () and len(deleted.kept) == 2
    assert sorted(p.name for p in own.iterdir()) == ["README.md", "my-notes.txt"]  # the listed, unchanged file went
    assert (bare / "weights.bin").exists() and "no readable lowrank_lab_manifest.json" in deleted.kept[1]
    assert store.count() == 0


def test_an_unknown_run_is_a_clear_error(store):
    with pytest.raises(RunStoreError, match="no run #7"):
        store.get(7)


def test_the_loss_fit_learns_from_the_anchored_estimate_and_from_raw_ones_recorded_before_it(store):
    # Measured ΔL = 2 · D* over three runs with an anchored estimate, and one older run with only D.
    for i, anchored in enumerate((0.1, 0.2, 0.4)):
        measured = 10.0 * math.exp(2 * anchored)
        prediction = {"raw_loss_increase": anchored / 2, "anchored_loss_increase": anchored}
        figures = {"perplexity_dense": 10.0, "perplexity_compressed": measured}
        store.record(_record(prediction=prediction, figures=figures, keep=0.9 - 0.1 * i))
    fit = fit_from_runs(store.runs())
    assert (fit.runs, fit.a, fit.b) == (3, pytest.approx(2.0), pytest.approx(1.0))
    legacy = {"perplexity_dense": 10.0, "perplexity_compressed": 10.0 * math.exp(2 * 0.8)}
    store.record(_record(prediction={"raw_loss_increase": 0.8}, figures=legacy))
    (old,) = [r for r in store.runs() if r.predicted_loss_raw == 0.8]
    assert old.predicted_loss_anchored is None
    fit = fit_from_runs(store.runs())
    assert (fit.runs, fit.a, fit.b) == (4, pytest.approx(2.0), pytest.approx(1.0))
