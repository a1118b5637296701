"""Benchmark: listing 10,000 runs from the run store, against two ways of keeping runs without its columns.

    python bench/runs_store.py [--runs 10000] [--repeats 15]

Fills a fresh store with ``--runs`` realistic compression records (a 210-matrix plan as in
smollm2-135m, calibration and evaluation settings, figures with three generations, a
prediction; each with a checkpoint folder, half of them removed so they list as missing) and
times ``RunStore.runs()`` — every run as a row with its artifacts and whether they are still
on disk — (median of ``--repeats``, wall and CPU time: on a shared machine the CPU time is what
the listing costs without other jobs on the cores; target ≤ 100 ms), and one model's runs. Baselines, in the
same run:
  * the same SQLite file read whole: every run's JSON document parsed (what a store without
    list columns would do),
  * one JSON file per run in a folder, each read and parsed (what a store without a database
    would do).
Then two writers (threads, each its own connection) record 1,000 runs at once: none may be lost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_lab.plan import RankPlan  # noqa: E402
from lowrank_lab.runs import Artifact, RunRecord, RunStore  # noqa: E402

KINDS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
         "mlp.up_proj", "mlp.down_proj")  # fmt: skip
PLAN = RankPlan({f"model.layers.{layer}.{kind}": 64 + layer for layer in range(30) for kind in KINDS})
GENERATIONS = [{"prompt": "What is a Python list comprehension?", "dense": "A list comprehension " * 12,
                "compressed": "A compact way " * 12}] * 3  # fmt: skip


def record(i: int, store: RunStore, uid: str | None = None) -> RunRecord:
    uid = uid or f"r{i:06d}"
    keep = 0.5 + (i % 5) / 10
    return RunRecord(
        kind="compression", model="smollm2-135m" if i % 4 else "tiny-llama", model_digest="d" * 32,
        method="whitened", allocation=("uniform", "auto")[i % 2], keep=keep, plan=PLAN,
        settings={"calibration": {"text": "built-in", "samples": 32, "seq_len": 256},
                  "evaluation": {"text": "built-in", "seq_len": 256, "max_blocks": 32}},
        figures={"params_dense": 134515008, "params_compressed": int(134515008 * keep), "perplexity_dense": 18.86,
                 "perplexity_compressed": 18.86 * (2 - keep), "linear_params_dense": 106168320,
                 "linear_params_compressed": int(106168320 * keep), "generations": GENERATIONS},
        prediction={"perplexity": 18.86 * (2 - keep), "perplexity_low": 15.0, "perplexity_high": 40.0,
                    "raw_loss_increase": 1 - keep, "activation_error": 0.05},
        artifacts=(Artifact("checkpoint", str(store.artifact_path(uid, "checkpoint"))),), origin="bench", uid=uid,
    )  # fmt: skip


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn()`` (CPU time: what it costs without other jobs on the cores)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lowrank-bench-store-") as tmp:
        tmp = Path(tmp)
        store = RunStore(tmp / "runs.sqlite3")
        files = tmp / "json-per-run"
        files.mkdir()
        start = time.perf_counter()
        for i in range(args.runs):  # one at a time: 10,000 plans held at once would slow every later step (GC)
            r = record(i, store)
            store.record(r)
            if i % 2 == 0:  # half the checkpoints are still there, half were removed by hand
                Path(r.artifacts[0].path).mkdir(parents=True)
            data = {"row": {"uid": r.uid, "kind": r.kind, "model": r.model, "method": r.method},
                    "plan": r.plan.as_dict(), "settings": r.settings, "figures": r.figures,
                    "prediction": r.prediction, "artifacts": [r.artifacts[0].path]}  # fmt: skip
            (files / f"{r.uid}.json").write_text(json.dumps(data))
        fill = time.perf_counter() - start
        size = store.path.stat().st_size + sum(p.stat().st_size for p in tmp.glob("runs.sqlite3-*"))
        print(f"filled {args.runs:,} runs in {fill:.1f} s ({1e3 * fill / args.runs:.2f} ms a run, with the JSON "
              f"files); store {size / 2**20:.1f} MiB", flush=True)  # fmt: skip

        rows = store.runs()
        assert len(rows) == args.runs and sum(r.status == "missing" for r in rows) == args.runs // 2

        def whole_documents():
            conn = store._conn()
            return [json.loads(d) for (d,) in conn.execute("SELECT data FROM run_data ORDER BY run_id DESC")]

        def json_files():
            out = []
            for path in files.glob("*.json"):
                data = json.loads(path.read_text())
                data["missing"] = not Path(data["artifacts"][0]).exists()
                out.append(data)
            return out

        ways = [
            ("RunStore.runs(): every run, artifacts checked on disk", store.runs, args.repeats),
            ("RunStore.runs(model=...): one model (a quarter)", lambda: store.runs(model="tiny-llama"), args.repeats),
            ("baseline: same file, every JSON document parsed", whole_documents, args.repeats),
            ("baseline: one JSON file per run, each read and parsed", json_files, max(3, args.repeats // 3)),
        ]
        measured = [(label, *median_ms(fn, repeats)) for label, fn, repeats in ways]
        (_, listed, listed_cpu) = measured[0]
        print(f"{'way':<56} {'wall ms':>8} {'CPU ms':>8} {'ratio (CPU)':>14}")
        for label, wall, cpu in measured:
            ratio = "1" if cpu == listed_cpu else f"{cpu / listed_cpu:.2f}x"
            print(f"{label:<56} {wall:>8.1f} {cpu:>8.1f} {ratio:>14}")
        print(f"{'target':<56} {100.0:>8.1f} {100.0:>8.1f} "
              f"{f'{listed / 100:.2f} / {listed_cpu / 100:.2f}':>14}  (wall / CPU, of target)")  # fmt: skip

        before = store.count()
        per_writer = 500
        barrier = threading.Barrier(2)
        errors = []

        def write(tag: str) -> None:
            try:
                barrier.wait()
                for i in range(per_writer):
                    store.record(record(i, store, uid=f"{tag}{i:05d}"))
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=write, args=(tag,)) for tag in "ab"]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - start
        lost = before + 2 * per_writer - store.count()
        print(f"two writers at once: {2 * per_writer} runs in {took:.1f} s ({1e3 * took / (2 * per_writer):.1f} ms a run), "
              f"{lost} lost, {len(errors)} errors")  # fmt: skip


if __name__ == "__main__":
    main()
