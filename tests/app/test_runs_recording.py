"""The LoRA and Export pages record their runs (AppTest, tiny-llama); a broken store only warns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab import LoraSettings, finetune
from lowrank_lab.data import builtin_source, prepare
from lowrank_lab.runs import RunStore
from lowrank_lab.runs.record import record_compression, record_finetune
from lowrank_lab.ui import state
from lowrank_lab.ui.export_panel import BUILT
from lowrank_lab.ui.finetune_view import JOB
from lowrank_lab.ui.run_store import NOT_RECORDED
from tests.app.test_export_page import _build
from tests.unit.export_support import compressed_model

ROOT = Path(__file__).resolve().parents[2]
LORA = str(ROOT / "pages" / "3_LoRA.py")
EXPORT = str(ROOT / "pages" / "4_Export.py")


@pytest.fixture
def store(tmp_path, monkeypatch) -> RunStore:
    path = tmp_path / "store" / "runs.sqlite3"
    path.parent.mkdir()
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(path))
    return RunStore(path)


def _page(path: str, **session) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def _train(at: AppTest) -> AppTest:
    at.number_input(key="lora_steps").set_value(2)
    at.select_slider(key="lora_seq_len").set_value(32)
    at.number_input(key="lora_eval").set_value(0)
    at.button(key="lora_train").click().run()
    at.session_state[JOB].join(timeout=120)
    time.sleep(0.05)
    return at.run()


def test_a_fine_tune_of_a_recorded_compression_is_recorded_with_its_adapter(store, tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    parent = record_compression(store, compressed, allocation="uniform", keep=0.5, save=False)
    at = _page(LORA, **{state.COMPRESSED: state.CompressionRun(compressed, None, "uniform")})
    at.radio(key="lora_base").set_value("compressed")
    at = _train(at)
    assert not at.exception and not at.error
    job = at.session_state[JOB]
    caption = next(c.value for c in at.caption if "Recorded as run" in c.value)
    assert f"run #{job.run_id}" in caption
    row = store.get(job.run_id).row
    assert (row.kind, row.allocation, row.parent, row.origin) == ("finetune", "compressed", parent, "app")
    assert (Path(row.artifact("adapter").path) / "adapter_model.safetensors").exists()
    assert (Path(row.artifact("adapter").path) / "base" / "config.json").exists()  # the compressed base


def test_a_broken_store_never_stops_a_fine_tune(store):
    store.close()
    store.path.write_bytes(b"garbage" * 100)
    at = _train(_page(LORA))
    assert not at.exception and at.session_state[state.ADAPTER] is not None
    assert any(NOT_RECORDED in w.value for w in at.warning)
    assert at.session_state[JOB].run_id is None


def test_building_an_export_records_it(store, tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.8)
    parent = record_compression(store, compressed, allocation="plan", save=False)
    at = _page(EXPORT, **{state.COMPRESSED: state.CompressionRun(compressed, None, "uniform")})
    at.selectbox(key="export_dtype").set_value("float16").run()
    at = _build(at)
    assert not at.exception and not at.warning
    export = store.runs(kind="export")[0]
    run = store.get(export.id)
    assert (export.method, export.parent, run.settings["dtype"]) == ("compressed", parent, "float16")
    assert run.figures["bytes"] == len(at.session_state[BUILT].data)  # the zip served


def test_a_broken_store_never_stops_an_export(store, tiny_llama):
    store.close()
    store.path.write_bytes(b"garbage" * 100)
    at = _page(EXPORT, **{state.COMPRESSED: state.CompressionRun(compressed_model(tiny_llama, keep=0.8), None, "plan")})
    at = _build(at)
    assert not at.exception and at.get("download_button")
    assert any(NOT_RECORDED in w.value and "not a readable SQLite database" in w.value for w in at.warning)


def test_a_reopened_adapter_shows_on_the_lora_page_with_its_figures(store, tiny_llama):
    settings = LoraSettings(r=2, steps=2, batch_size=2, max_seq_len=32, eval_every=0)
    adapter = finetune(tiny_llama, prepare(builtin_source("domain-text"), tiny_llama.tokenizer, 32), settings)
    run_id = record_finetune(store, adapter, data="domain-text")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    at.run()
    at.switch_page("pages/6_Runs.py").run()
    at.button(key="runs_reopen").click().run()
    assert not at.exception and "adapter is open" in at.success[0].value
    at.switch_page("pages/3_LoRA.py").run()
    assert not at.exception
    assert any(f"Run #{run_id}: a LoRA adapter on the original model" in s.value for s in at.success)
    loss = next(m for m in at.metric if m.label == "Validation loss")
    assert loss.value == f"{adapter.report.val_loss_after:.3f}"
