"""The run store's tables, versioned: ``PRAGMA user_version`` says which migrations ran.

``MIGRATIONS[i]`` takes a database from schema ``i`` to ``i + 1``; opening a store runs the
missing ones in one transaction, so an older store upgrades in place and keeps its runs. A
store from a newer lowrank_lab (a higher version) is never touched.

Listing reads only the scalar columns of ``runs`` (and ``artifacts``); everything else about a
run — plan, settings, figures, prediction, stage report — is one JSON document in ``run_data``,
read when one run is opened. It has its own table so that a list never reads through it (SQLite
stores a row's columns in one record: a later column sits behind a large earlier one).
"""

from __future__ import annotations

V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    model_digest TEXT,
    method TEXT,
    allocation TEXT,
    keep REAL,
    params_kept INTEGER,
    params_dense INTEGER,
    linear_kept REAL,
    perplexity REAL,
    perplexity_dense REAL,
    plan_digest TEXT,
    origin TEXT NOT NULL,
    parent INTEGER REFERENCES runs(id) ON DELETE SET NULL
);
CREATE TABLE run_data (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    data TEXT NOT NULL
);
CREATE TABLE artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    path TEXT NOT NULL,
    owned INTEGER NOT NULL,
    PRIMARY KEY (run_id, role)
);
CREATE INDEX runs_by_model ON runs(model, created);
"""

# Version 2: what was predicted before measuring, beside what was measured, and plans found by digest.
V2 = """
ALTER TABLE runs ADD COLUMN predicted_perplexity REAL;
ALTER TABLE runs ADD COLUMN predicted_low REAL;
ALTER TABLE runs ADD COLUMN predicted_high REAL;
ALTER TABLE runs ADD COLUMN predicted_loss_raw REAL;
CREATE INDEX runs_by_plan ON runs(model, plan_digest);
"""

# Version 3: the raw estimate anchored on the uniform plan of the same size (what the loss fit maps).
V3 = """
ALTER TABLE runs ADD COLUMN predicted_loss_anchored REAL;
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3)
SCHEMA_VERSION = len(MIGRATIONS)

# The columns a list reads, in RunRow's order (artifacts come from their own table).
ROW_COLUMNS = (
    "id", "uid", "kind", "created", "model", "model_digest", "method", "allocation", "keep", "params_kept",
    "params_dense", "linear_kept", "perplexity", "perplexity_dense", "predicted_perplexity", "predicted_low",
    "predicted_high", "predicted_loss_raw", "predicted_loss_anchored", "plan_digest", "origin", "parent",
)  # fmt: skip
