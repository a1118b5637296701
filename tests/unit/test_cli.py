"""The command line: JSON last line, files written, clear errors with exit status 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from lowrank_lab.cli import main
from tests.conftest import ROOT


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _private_spectrum_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_LAB_CACHE", str(tmp_path / "cache"))
    # the tiny tokenizer is trained into that empty cache on first use: fine, it takes a second


def test_spectra_json_and_json_file(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["spectra", "--model", "tiny-gpt2", "--out", str(out), "--json"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["ok"] and result["command"] == "spectra"
    assert result["matrices"] == 10  # wte, wpe, 2 layers × 4 Conv1D
    assert result["out"] == str(out)
    data = json.loads(out.read_text())["matrices"]
    assert len(data) == 10
    first = data[2]
    assert first["name"] == "transformer.h.0.attn.c_attn" and (first["rows"], first["cols"]) == (192, 64)
    assert len(first["singular_values"]) == 64
    assert first["spectral"] == pytest.approx(first["singular_values"][0])


def test_spectra_csv_without_embeddings(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["spectra", "--model", "tiny-llama", "--no-embeddings", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model.layers.1.mlp.down_proj" in text  # the human table
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 14 and {"stable_rank", "energy_rank_99", "mp_outliers"} <= set(rows[0])


def test_bad_model_exits_2_with_a_json_error(capsys):
    assert main(["spectra", "--model", "no-such-model", "--json"]) == 2
    captured = capsys.readouterr()
    assert "no model named 'no-such-model'" in captured.err
    result = _last_json(captured.out)
    assert result == {"command": "spectra", "ok": False, "error": result["error"]}
    assert "smollm2-135m" in result["error"]


def test_bad_out_suffix(tmp_path, capsys):
    assert main(["spectra", "--model", "tiny-llama", "--out", str(tmp_path / "x.txt")]) == 2
    assert ".json or .csv" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lowrank_lab", "spectra", "--model", "tiny-bert", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout)["matrices"] == 16  # 3 embeddings + 2 layers × 6 + the pooler
