"""The Runs page (AppTest): the table and its filters, a run's details, reopening for the LoRA and
Export pages, deleting with a confirmation, missing files, the charts, and every bad database."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

from lowrank_lab import CalibrationSettings, compress
from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.finetune import TrainedAdapter
from lowrank_lab.models import CompressedModel
from lowrank_lab.plan import plan_keep_params
from lowrank_lab.prediction import prediction_basis
from lowrank_lab.runs import SCHEMA_VERSION, RunRecord, RunStore
from lowrank_lab.runs.record import record_compression, record_finetune
from lowrank_lab.ui import prediction_view as pv
from lowrank_lab.ui import runs_view as view
from lowrank_lab.ui import state
from lowrank_lab.ui.run_store import NOT_RECORDED
from lowrank_lab.ui.runs_charts import frontier_spec
from tests.unit.export_support import adapter_on_compressed, logits
from tests.unit.runs_support import measured

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "6_Runs.py")
CAL = CalibrationSettings(samples=4, seq_len=64)


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    path = tmp_path / "store" / "runs.sqlite3"
    path.parent.mkdir()
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(path))
    return RunStore(path)


@pytest.fixture(scope="module")
def made(tiny_llama):
    """Compressions of tiny-llama at three budgets (whitened, with a prediction) and one svd."""
    basis = prediction_basis(tiny_llama, CAL, cache=KeyedCache(name="test"))
    mats = linear_matrices(tiny_llama)
    out = []
    for keep in (0.8, 0.5, 0.3):
        c = compress(tiny_llama, plan_keep_params(mats, keep), "whitened", CAL)
        out.append((c, keep, basis.predict(c.plan), measured(c, 500.0, 500.0 + 100 * (1 - keep))))
    svd = compress(tiny_llama, plan_keep_params(mats, 0.5), "svd")
    out.append((svd, 0.5, None, measured(svd, 500.0, 900.0)))
    return out


def _fill(store: RunStore, made, save_first: bool = True) -> list[int]:
    ids = []
    for i, (c, keep, prediction, comparison) in enumerate(made):
        ids.append(record_compression(store, c, allocation="uniform", keep=keep, prediction=prediction,
                                      comparison=comparison, save=save_first and i == 0))  # fmt: skip
    return ids


def _page(**session) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def _figure(at: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id)


def test_an_empty_store_says_where_runs_come_from(store):
    at = _page()
    assert not at.exception and not at.error
    assert "No runs here yet" in at.info[0].value


def test_the_table_lists_filters_and_orders_runs(store, made):
    ids = _fill(store, made, save_first=False)
    store.record(RunRecord("export", "tiny-gpt2", method="compressed", figures={"bytes": 10}))
    at = _page()
    assert not at.exception and not at.error
    assert at.selectbox(key=view.MODEL).value == "tiny-llama"  # the current model's runs first
    table = at.dataframe[0].value
    assert list(table["run"]) == ids[::-1]
    assert list(table["perplexity"]) == [900.0, 570.0, 550.0, 520.0]
    assert table["predicted"].notna().sum() == 3  # the svd run predicts nothing
    at.selectbox(key=view.SORT).set_value("lowest perplexity").run()
    assert list(at.dataframe[0].value["perplexity"]) == [520.0, 550.0, 570.0, 900.0]
    at.selectbox(key=view.SORT).set_value("fewest parameters kept").run()
    kept = list(at.dataframe[0].value["linear kept %"])
    assert kept == sorted(kept)
    at.selectbox(key=view.MODEL).set_value(view.ALL).run()
    assert len(at.dataframe[0].value) == 5
    at.selectbox(key=view.KIND).set_value("export").run()
    assert list(at.dataframe[0].value["model"]) == ["tiny-gpt2"]
    at.selectbox(key=view.MODEL).set_value("tiny-llama").run()
    assert "No runs here yet" in at.info[0].value


def test_the_charts_show_the_frontier_and_predicted_against_measured(store, made, tiny_llama):
    _fill(store, made, save_first=False)
    pv._latest().clear()  # no calibrated model in this process yet: measured points only
    at = _page()
    assert any("predicted curve shows once" in c.value for c in at.caption)
    frontier = _figure(at, "runs_frontier")
    groups = {t["name"]: len(t["x"]) for t in frontier["data"] if t.get("mode") == "markers"}
    assert groups == {"whitened · uniform": 3, "svd · uniform": 1}
    front = next(t for t in frontier["data"] if t.get("name") == "Pareto front (measured)")
    assert front["y"] == [570.0, 550.0, 520.0]  # the svd run is beaten by a smaller whitened one
    predicted = _figure(at, "runs_predicted")
    assert (
        "Spearman ρ = 1.00" in predicted["layout"]["title"]["text"] and "3 runs" in predicted["layout"]["title"]["text"]
    )
    points = next(t for t in predicted["data"] if t.get("mode") == "markers")
    assert len(points["x"]) == 3
    go.Figure(frontier_spec(store.runs(), [], 500.0))  # the dict validates

    # Once the model is calibrated (by any session), the predicted curves join the frontier.
    basis = prediction_basis(tiny_llama, CAL, cache=KeyedCache(name="test"))
    key = (tiny_llama.spec, CAL.key())
    pv.basis_cache().get_or_compute(key, lambda: basis)
    pv._latest()[tiny_llama.spec] = key
    at.run()
    names = [t.get("name") for t in _figure(at, "runs_frontier")["data"]]
    assert "predicted: best plan for the size" in names and "predicted: uniform plans" in names


def test_reopening_a_compression_serves_the_lora_and_export_pages(store, made, tiny_llama):
    (run_id,) = _fill(store, made[:1])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    at.run()
    at.switch_page("pages/6_Runs.py").run()
    assert at.selectbox(key=view.CHOSEN).value == run_id
    assert "Run #" in at.expander[0].label
    at.button(key=view.REOPEN).click().run()
    assert not at.exception and not at.error
    assert f"Run #{run_id}'s compressed model is open" in at.success[0].value
    run = at.session_state[state.COMPRESSED]
    reopened = run.compressed
    assert isinstance(reopened, CompressedModel) and reopened.plan == made[0][0].plan
    assert run.comparison.compressed.perplexity == 520.0 and run.ranks_from == "uniform"  # the measured figures too
    assert torch.allclose(logits(reopened.model), logits(made[0][0].model), atol=1e-5)
    at.switch_page("pages/4_Export.py").run()
    assert not at.exception and "Compressed model of **tiny-llama**" in at.success[0].value
    at.switch_page("pages/3_LoRA.py").run()
    assert "heal it" in at.radio(key="lora_base").options[0]  # offered first


def test_reopening_an_adapter_and_a_run_of_another_model(store, tiny_llama, tiny_gpt2):
    adapter = adapter_on_compressed(tiny_llama)
    adapter_id = record_finetune(store, adapter, data="domain-text")
    other = compress(tiny_gpt2, plan_keep_params(linear_matrices(tiny_gpt2), 0.5), "svd")
    other_id = record_compression(store, other, allocation="uniform", keep=0.5)
    at = _page()
    at.selectbox(key=view.CHOSEN).set_value(adapter_id).run()
    at.button(key=view.REOPEN).click().run()
    assert not at.exception and "adapter is open" in at.success[0].value
    assert isinstance(at.session_state[state.ADAPTER], TrainedAdapter)
    at.selectbox(key=view.MODEL).set_value(view.ALL).run()
    at.selectbox(key=view.CHOSEN).set_value(other_id).run()
    at.button(key=view.REOPEN).click().run()
    assert not at.exception
    assert at.session_state[state.MODEL_SOURCE] == "tiny-gpt2"  # the app follows the run's model
    assert at.session_state[state.COMPRESSED].compressed.source.source == "tiny-gpt2"


def test_deleting_asks_first_and_removes_the_saved_files(store, made):
    ids = _fill(store, made[:2])
    folder = Path(store.get(ids[0]).row.artifact("checkpoint").path)
    at = _page()
    at.selectbox(key=view.CHOSEN).set_value(ids[0]).run()
    at.button(key=view.DELETE).click().run()
    assert f"Delete run #{ids[0]} and its files ({folder})" in at.warning[0].value
    at.button(key=view.CANCEL).click().run()
    assert not at.get("button") or not any(b.key == view.CONFIRM for b in at.button)
    assert store.count() == 2 and folder.exists()
    at.button(key=view.DELETE).click().run()
    at.button(key=view.CONFIRM).click().run()
    assert not at.exception and f"Deleted run #{ids[0]} and 1 saved folder(s)." in at.success[0].value
    assert store.count() == 1 and not folder.exists()
    assert list(at.dataframe[0].value["run"]) == [ids[1]]


def test_a_run_whose_files_were_removed_shows_missing_and_can_still_be_deleted(store, made):
    (run_id,) = _fill(store, made[:1])
    shutil.rmtree(store.get(run_id).row.artifact("checkpoint").path)
    at = _page()
    assert list(at.dataframe[0].value["files"]) == ["missing"]
    assert "removed by hand" in at.warning[0].value
    assert at.button(key=view.REOPEN).disabled
    at.button(key=view.DELETE).click().run()
    at.button(key=view.CONFIRM).click().run()
    assert f"Deleted run #{run_id}." in at.success[0].value and store.count() == 0


def test_a_corrupt_store_is_reported_and_left_alone(store):
    store.close()  # corrupted while no one has it open
    store.path.write_bytes(b"garbage" * 500)
    at = _page()
    assert not at.exception
    assert NOT_RECORDED in at.warning[0].value and "not a readable SQLite database" in at.warning[0].value
    assert store.path.read_bytes() == b"garbage" * 500


def test_a_store_from_a_newer_lowrank_lab_is_reported(store, made):
    _fill(store, made[:1], save_first=False)
    store.close()
    conn = sqlite3.connect(store.path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    at = _page()
    assert not at.exception and "newer lowrank_lab" in at.warning[0].value


_HOLD = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE runs SET model = model")
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_store_locked_by_another_process_is_reported(store, made):
    _fill(store, made[:1], save_first=False)
    store.close()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        at = _page()
        assert not at.exception and "is locked" in at.warning[0].value
    finally:
        holder.communicate("\n", timeout=30)
    assert "is locked" not in "".join(w.value for w in _page().warning)  # free again: listed as before


_READ_ONLY_PAGE = textwrap.dedent(
    """
    import json, sys
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(sys.argv[1], default_timeout=120)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    print(json.dumps({"exception": [e.message for e in at.exception], "warnings": [w.value for w in at.warning],
                      "runs": len(at.dataframe[0].value) if at.dataframe else 0}))
    """
)


def _drop_root_override():
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: root then obeys file permissions
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_read_only_store_is_listed_and_said_to_be_read_only(store, made):
    _fill(store, made[:1], save_first=False)
    store.close()
    conn = sqlite3.connect(store.path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    store.path.chmod(0o444)
    store.path.parent.chmod(0o555)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", _READ_ONLY_PAGE, PAGE], capture_output=True, text=True, env=env,
                             timeout=600, preexec_fn=_drop_root_override if os.geteuid() == 0 else None)  # fmt: skip
    finally:
        store.path.parent.chmod(0o755)
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert shown["exception"] == [] and shown["runs"] == 1, out.stderr[-2000:]
    assert any("read-only" in w for w in shown["warnings"])


def test_the_home_page_s_guide_and_the_sidebar_name_the_runs_page(store):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    at.run()
    assert not at.exception
    assert "**Runs**" in [p.proto.label for p in at.get("page_link")]
    at.switch_page("pages/6_Runs.py").run()
    assert not at.exception and "No runs here yet" in at.info[0].value
