"""The run store: every compression, fine-tune, extraction and export, recorded in SQLite.

    from lowrank_lab.runs import RunStore

    store = RunStore()                      # runs.sqlite3 in the cache folder ($LOWRANK_LAB_CACHE)
    for row in store.runs(model="smollm2-135m"):
        print(row.id, row.method, row.allocation, row.perplexity, row.status)
    run = store.get(row.id)                 # plan, settings, figures, prediction, stage report

``lowrank_lab.runs.record`` turns a compressed model, a trained adapter or an export into a
record (saving its artifacts under the store's folder); ``lowrank_lab.runs.reopen`` loads them
back; ``lowrank_lab.runs.frontier`` has the measured frontier and the prediction's scores.
"""

from lowrank_lab.runs.records import KINDS, Artifact, Run, RunKind, RunRecord, RunRow, plan_digest
from lowrank_lab.runs.schema import SCHEMA_VERSION
from lowrank_lab.runs.store import DB_NAME, RunStore, default_path

__all__ = [
    "DB_NAME",
    "KINDS",
    "SCHEMA_VERSION",
    "Artifact",
    "Run",
    "RunKind",
    "RunRecord",
    "RunRow",
    "RunStore",
    "default_path",
    "plan_digest",
]
