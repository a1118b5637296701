"""The Ranks page's predictions (AppTest, tiny-llama): calibrate, then the activation-aware error and
predicted perplexity follow every move and equal the core's; the table and the chart gain the
whitened error; measured plans are marked; compressing records a run, and a broken store never
stops the page."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import CalibrationSettings, compress
from lowrank_lab.cache import KeyedCache
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.plan import plan_keep_params
from lowrank_lab.prediction import prediction_basis
from lowrank_lab.runs import RunStore
from lowrank_lab.runs.record import record_compression
from lowrank_lab.ui import prediction_view as pv
from lowrank_lab.ui import state
from lowrank_lab.ui.rank_widgets import kind_key
from lowrank_lab.ui.run_store import NOT_RECORDED
from tests.unit.runs_support import measured

ROOT = Path(__file__).resolve().parents[2]
RANKS = str(ROOT / "pages" / "2_Ranks.py")
Q = "self_attn.q_proj"
CAL = CalibrationSettings()  # what the Calibrate button uses
# This module's own calibration cache: the process-wide one would then answer later tests' calls
# on these (default) settings without the work, and the checks, those tests are about.
CACHE = KeyedCache(name="test_ranks_prediction")


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    path = tmp_path / "store" / "runs.sqlite3"
    path.parent.mkdir()
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(path))
    return RunStore(path)


@pytest.fixture(scope="module")
def basis(tiny_llama):
    return prediction_basis(tiny_llama, CAL, cache=CACHE)


def page(**session) -> AppTest:
    at = AppTest.from_file(RANKS, default_timeout=240)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return settle(at)


def settle(at: AppTest) -> AppTest:
    """Wait for the jobs the page started (the prediction basis, a compression), then rerun it."""
    for _ in range(3):  # a finished compression may start the basis of its calibration
        jobs = [at.session_state[pv.JOB][1]] if pv.JOB in at.session_state else []
        jobs += [at.session_state["compress_job"]] if "compress_job" in at.session_state else []
        if not jobs:
            break
        assert all(job.join(timeout=240) for job in jobs)
        at.run()
        assert not at.exception, at.exception
    return at


def values(data) -> np.ndarray:
    """A plotly array as JSON gives it: a list, or base64 bytes with their dtype."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data, dtype=float)


def metric(at: AppTest, label: str):
    return next((m for m in at.metric if m.label == label), None)


def calibrated(store) -> AppTest:
    """The page calibrated on the button's settings (another test may have left a basis of other settings)."""
    return page(**{state.CALIBRATION: state.Calibration("tiny-llama", CAL)})


def test_before_calibration_the_page_offers_it(store):
    pv.basis_cache().clear()
    pv._latest().clear()
    at = page()
    assert metric(at, pv.ACT_ERROR) is None and metric(at, pv.PREDICTED_PPL) is None
    assert "Predicted loss" in at.info[0].value
    at.button(key=pv.BUTTON).click().run()
    settle(at)
    assert not at.exception and not at.error
    assert at.session_state[state.CALIBRATION] == state.Calibration("tiny-llama", CAL)
    assert metric(at, pv.ACT_ERROR) is not None


def test_predictions_equal_the_core_s_and_follow_the_sliders(store, basis):
    at = calibrated(store)
    for value in (None, 3, 60):
        if value is not None:
            at.slider(key=kind_key(Q, at.session_state)).set_value(value).run()
        plan = at.session_state[state.PLAN]
        p = basis.predict(plan)
        assert metric(at, pv.ACT_ERROR).value == f"{p.activation_error:.4f}"
        assert metric(at, pv.PREDICTED_PPL).value == f"{p.perplexity:,.2f}"
        assert metric(at, pv.PREDICTED_LOSS).value == f"{p.loss_increase:.3f} nats"
        table = at.dataframe[0].value.set_index("name")
        expected = dict(zip(basis.names, p.matrix_errors))
        assert np.allclose([table.loc[n, "activation_error"] for n in basis.names], list(expected.values()))
        q_label = at.slider(key=kind_key(Q, at.session_state)).label
        if value == 60:
            assert "keep dense" in q_label
        else:
            assert f"act. {p.kind_errors[Q]:.3f}" in q_label
    assert any("uncalibrated" in c.value for c in at.caption)  # no measured run yet: the prior


def test_the_error_chart_draws_the_whitened_curve(store, basis):
    at = calibrated(store)
    name = "model.layers.1.mlp.down_proj"
    at.selectbox(key="ranks_matrix").set_value(name).run()
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "ranks_error_chart" in c.proto.id)
    assert name in chart["layout"]["title"]["text"]
    whitened = next(t for t in chart["data"] if "whitened" in t["name"])
    assert np.allclose(values(whitened["y"]), basis.error_curve(name))
    assert len(values(whitened["y"])) == basis.full_ranks[basis.index[name]]


def test_a_calibration_made_elsewhere_turns_predictions_on(store):
    at = page(
        **{state.CALIBRATION: state.Calibration("tiny-llama", CAL)}
    )  # as the Spectra page's button or a compression leaves it
    assert metric(at, pv.PREDICTED_PPL) is not None


def test_a_plan_already_measured_is_marked(store, tiny_llama):
    at = calibrated(store)
    plan = at.session_state[state.PLAN]
    assert not any("Already measured" in s.value for s in at.success)
    compressed = compress(tiny_llama, plan, "whitened", CalibrationSettings(samples=4, seq_len=32))
    run_id = record_compression(store, compressed, allocation="plan", save=False,
                                comparison=measured(compressed, 600.0, 640.0))  # fmt: skip
    at.run()
    marked = next(s.value for s in at.success if "Already measured" in s.value)
    assert f"run #{run_id} (whitened, plan): perplexity 640.00" in marked


def test_the_fit_from_measured_runs_tightens_the_band(store, tiny_llama, basis):
    at = calibrated(store)
    before = metric(at, "Uncertainty").value
    for keep in (0.8, 0.6, 0.4, 0.2):  # measured runs whose loss increase is 2 × the anchored prediction
        c = compress(tiny_llama, plan_keep_params(linear_matrices(tiny_llama), keep), "whitened", CAL)
        raw = basis.predict(c.plan).anchored_loss_increase
        record_compression(store, c, allocation="uniform", keep=keep, save=False, prediction=basis.predict(c.plan),
                           comparison=measured(c, 100.0, 100.0 * math.exp(2 * raw)))  # fmt: skip
    at.run()
    assert before == f"×/÷ {math.exp(math.log(3)):.2f}"
    assert metric(at, "Uncertainty").value == f"×/÷ {math.exp(math.log(3) / math.sqrt(3)):.2f}"  # 4 runs, exact
    plan = at.session_state[state.PLAN]
    expected = basis.dense_perplexity * math.exp(2 * basis.predict(plan).anchored_loss_increase)
    assert metric(at, pv.PREDICTED_PPL).value == f"{expected:,.2f}"
    assert any("fitted on 4 measured runs" in c.value for c in at.caption)


def _submit(at: AppTest) -> AppTest:
    at.radio(key="compress_ranks").set_value("uniform")
    at.slider(key="compress_keep").set_value(60)
    at.number_input(key="compress_samples").set_value(10)  # 640 tokens: the guard rail's floor for tiny-llama
    at.number_input(key="compress_seq_len").set_value(64)
    next(b for b in at.button if b.label == "Compress and evaluate").click()
    at.run()
    assert not at.exception, at.exception
    return settle(at)


def test_compressing_records_a_run_with_its_prediction(store):
    at = _submit(page())
    (row,) = store.runs()
    assert (row.kind, row.method, row.allocation, row.keep, row.origin) == (
        "compression",
        "whitened",
        "uniform",
        0.6,
        "app",
    )
    assert row.predicted_perplexity > 0 and row.perplexity > 0 and row.status == "ok"
    caption = next(c.value for c in at.caption if "Recorded as run" in c.value)
    assert (
        f"run #{row.id}" in caption
        and "Predicted perplexity" in caption
        and f"measured {row.perplexity:.2f}" in caption
    )


def test_a_broken_store_never_stops_a_compression(store):
    store.close()
    store.path.write_bytes(b"\0garbage" * 300)
    at = _submit(page())
    assert at.session_state[state.COMPRESSED] is not None
    assert any(NOT_RECORDED in w.value and "not a readable SQLite database" in w.value for w in at.warning)
    assert store.path.read_bytes() == b"\0garbage" * 300
