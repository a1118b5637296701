"""``python -m lowrank_lab runs`` and the recording by ``compress`` and ``finetune``: runs listed as
JSON, shown, deleted with their files; ``--no-record``; a broken store reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowrank_lab.cli import main
from lowrank_lab.runs import RunStore

FAST = ["--samples", "4", "--seq-len", "32", "--eval-seq-len", "32", "--eval-blocks", "2", "--max-new-tokens", "4"]
TRAIN = ["--steps", "2", "--max-seq-len", "32", "--r", "2", "--eval-every", "0"]


@pytest.fixture
def store_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "store" / "runs.sqlite3"
    path.parent.mkdir()
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(path))
    return path


def _json(capsys, *argv) -> tuple[int, dict, str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_compress_records_a_run_that_lists_shows_and_deletes(store_path, capsys):
    code, out, _ = _json(capsys, "compress", "--model", "tiny-llama", *FAST, "--keep", "0.6", "--allocate", "uniform")
    assert code == 0 and isinstance(out["run"], int)
    code, listed, _ = _json(capsys, "runs")
    assert code == 0 and listed["count"] == 1 and listed["store"] == str(store_path)
    (row,) = listed["runs"]
    assert (row["id"], row["kind"], row["model"], row["method"], row["allocation"], row["keep"], row["origin"]) == (
        out["run"], "compression", "tiny-llama", "whitened", "uniform", 0.6, "cli")  # fmt: skip
    assert row["perplexity"] == pytest.approx(out["figures"]["perplexity_compressed"])
    assert row["predicted_perplexity"] > 0 and row["predicted_loss_raw"] >= 0  # whitened: predicted from calibration
    assert row["status"] == "ok" and row["artifacts"][0]["role"] == "checkpoint"
    checkpoint = Path(row["artifacts"][0]["path"])
    assert (checkpoint / "config.json").exists() and checkpoint.is_relative_to(store_path.parent)

    code, shown, _ = _json(capsys, "runs", "--show", str(out["run"]))
    assert code == 0 and shown["plan"] and shown["settings"]["calibration"]["samples"] == 4
    assert shown["prediction"]["perplexity"] == pytest.approx(row["predicted_perplexity"])

    code, deleted, _ = _json(capsys, "runs", "--delete", str(out["run"]))
    assert code == 0 and deleted["removed"] == [str(checkpoint)] and deleted["kept"] == [] and not checkpoint.exists()
    code, missing, _ = _json(capsys, "runs", "--show", str(out["run"]))
    assert code == 2 and f"no run #{out['run']}" in missing["error"]


def test_no_record_records_nothing_and_an_svd_run_records_no_prediction(store_path, capsys):
    code, out, _ = _json(capsys, "compress", "--model", "tiny-llama", *FAST, "--no-eval", "--no-record")
    assert code == 0 and "run" not in out
    code, out, _ = _json(capsys, "compress", "--model", "tiny-llama", *FAST, "--no-eval", "--method", "svd",
                         "--allocate", "uniform")  # fmt: skip
    (row,) = RunStore(store_path).runs()
    assert row.id == out["run"] and row.method == "svd" and row.predicted_perplexity is None and row.perplexity is None


def test_a_user_s_out_folder_is_recorded_not_copied_and_survives_deleting_the_run(store_path, tmp_path, capsys):
    folder = tmp_path / "mine"
    code, out, _ = _json(capsys, "compress", "--model", "tiny-llama", *FAST, "--no-eval", "--allocate", "uniform",
                         "--out", str(folder))  # fmt: skip
    row = RunStore(store_path).get(out["run"]).row
    assert [(a.role, a.path, a.owned) for a in row.artifacts] == [("export", str(folder.resolve()), False)]
    # Healing that checkpoint names the compression as its parent.
    code, tuned, _ = _json(capsys, "finetune", "--model", "tiny-llama", "--compressed", str(folder), *TRAIN)
    assert code == 0 and RunStore(store_path).get(tuned["run"]).row.parent == out["run"]
    assert _json(capsys, "runs", "--delete", str(out["run"]))[1]["removed"] == []
    assert (folder / "config.json").exists()


def test_finetune_records_its_adapter(store_path, capsys):
    code, out, _ = _json(capsys, "finetune", "--model", "tiny-llama", *TRAIN)
    row = RunStore(store_path).get(out["run"]).row
    assert code == 0 and row.kind == "finetune" and row.allocation == "original" and row.model_digest
    assert row.perplexity == pytest.approx(out["perplexity_after"])
    assert (Path(row.artifact("adapter").path) / "adapter_config.json").exists()


def test_runs_filters_and_prints_a_table(store_path, capsys):
    _json(capsys, "finetune", "--model", "tiny-llama", *TRAIN)
    assert _json(capsys, "runs", "--kind", "compression")[1]["count"] == 0
    assert _json(capsys, "runs", "--model", "tiny-gpt2")[1]["count"] == 0
    assert main(["runs"]) == 0
    text = capsys.readouterr().out
    assert "finetune" in text and "tiny-llama" in text and "1 run(s) in" in text


def test_a_corrupt_store_is_reported_and_compress_still_succeeds(store_path, capsys):
    store_path.write_bytes(b"not a database" * 100)
    code, out, err = _json(capsys, "runs")
    assert code == 2 and "not a readable SQLite database" in out["error"]
    code, out, err = _json(capsys, "compress", "--model", "tiny-llama", *FAST, "--no-eval", "--allocate", "uniform")
    assert code == 0 and out["ok"] and out["run"] is None and "move it aside" in out["run_error"]
    assert "warning: not recorded" in err
    assert store_path.read_bytes() == b"not a database" * 100
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["runs.sqlite3"]  # no checkpoint left behind
