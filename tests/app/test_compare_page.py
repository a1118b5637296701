"""AppTest of the Compare page on tiny-llama: a second model by folder, the session's fine-tune or compression,
the change's heatmap and spectra, LoRA extraction to a PEFT zip, and bad second models."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from streamlit.testing.v1 import AppTest

from lowrank_lab.runs import RunStore
from lowrank_lab.spectra.delta import model_delta
from lowrank_lab.spectra.sources import ModuleSource
from lowrank_lab.ui import compare_inputs, compare_view, extract_panel
from lowrank_lab.ui.widgets import current_key
from tests.app.app_support import late_report
from tests.app.test_spectra_page import decoded
from tests.unit.delta_support import logits, lora_merged

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "5_Compare.py")
TARGETS = ("q_proj", "v_proj", "up_proj")


@pytest.fixture(scope="module")
def tuned_folder(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned") / "tiny-llama-lora4"
    model = lora_merged(tiny_llama.model, 4, TARGETS)
    model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder, model


def start(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["model_source"] = "tiny-llama"
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def finish(at: AppTest) -> AppTest:
    """Wait for the page's background job (a comparison or an extraction), then rerun to show its result."""
    for key, job_at in ((compare_view.JOB, 2), (extract_panel.JOB, 1)):
        if key in at.session_state:
            assert at.session_state[key][job_at].join(timeout=240)
            at.run()
    assert not at.exception, at.exception
    return at


def press(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    return finish(at)


def compare_with(at: AppTest, source: str) -> AppTest:
    at.text_input(key=compare_inputs.PATH).set_value(source).run()
    return press(at, compare_view.RUN)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def figure(at: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id)


def test_asks_for_a_second_model_first():
    at = start()
    assert at.selectbox(key=compare_inputs.SECOND).options == [compare_inputs.LABELS["other"]]
    assert any("Type the second model" in i.value for i in at.info)


def test_a_lora_merged_folder_changes_by_rank_r(tiny_llama, tuned_folder):
    folder, tuned = tuned_folder
    at = compare_with(start(), str(folder))
    assert metric(at, "Matrices changed") == "6 of 15"
    assert metric(at, "Rank of ΔW (median)") == "4"
    assert any("rank exactly 4" in s.value for s in at.success)
    # The heatmap: rank of ΔW / full rank, the three adapted kinds at 4/64, the rest 0.
    at.selectbox(key=compare_view.METRIC).set_value("rank").run()
    heat = figure(at, compare_view.HEATMAP)["data"][0]
    z = decoded(heat["z"]).reshape(2, 7)
    modules = dict(tiny_llama.model.named_modules())
    for j, kind in enumerate(heat["x"]):
        full = min(modules[f"model.layers.0.{kind}"].weight.shape)  # v_proj is 32×64 (two key-value heads)
        assert np.allclose(z[:, j], 4 / full if kind.rsplit(".", 1)[-1] in TARGETS else 0), kind
    # One matrix: the spectra of both weights and of the change.
    at.selectbox(key=current_key(compare_view.MATRIX, at.session_state)).set_value("model.layers.1.mlp.up_proj").run()
    assert metric(at, "Rank of ΔW") == "4 of 64"
    fig = figure(at, "compare_pair")
    names = [t.get("name") for t in fig["data"]]
    assert names[:3] == ["W₁ (tiny-llama)", f"W₂ ({folder})", "ΔW = W₂ − W₁"]
    w1 = tiny_llama.model.model.layers[1].mlp.up_proj.weight.detach().double().numpy()
    s1 = np.linalg.svd(w1, compute_uv=False)
    assert np.allclose(decoded(fig["data"][0]["y"]), s1, rtol=1e-8)
    # ‖ΔW‖₂/‖W₁‖₂ from W₁'s spectrum drawn here (the comparison itself did not need σ₁(W₁)).
    assert float(metric(at, "‖ΔW‖₂ / ‖W₁‖₂")) == pytest.approx(decoded(fig["data"][2]["y"])[0] / s1[0], rel=1e-2)
    assert len(decoded(fig["data"][2]["y"])) == 64  # the zero tail of ΔW is drawn at its rounding floor or left out
    table = at.dataframe[0].value
    assert len(table) == 15 and table.set_index("name").loc["model.layers.1.mlp.up_proj", "delta_rank"] == 4
    # A heatmap click, then another move before its run arrived: the browser still reports the
    # selectbox's old choice, which must not take the click back.
    old = at.selectbox(key=current_key(compare_view.MATRIX, at.session_state))._widget_state
    at.session_state[compare_view.CHOSEN] = "model.layers.0.self_attn.q_proj"  # what _on_cell does
    at.run()
    at.selectbox(key=compare_view.METRIC).set_value("stable_rank")
    late_report(at, [old])
    assert not at.exception, at.exception
    assert (
        at.selectbox(key=current_key(compare_view.MATRIX, at.session_state)).value == "model.layers.0.self_attn.q_proj"
    )


def test_extraction_estimates_live_and_downloads_a_peft_adapter(tiny_llama, tuned_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRANK_LAB_RUNS", str(tmp_path / "runs.sqlite3"))
    folder, tuned = tuned_folder
    at = compare_with(start(), str(folder))
    assert metric(at, "LoRA matrices") == "6"
    assert float(metric(at, "Energy of ΔW kept")) >= 0.99
    # A rank of 2 keeps part of each rank-4 change: the error shown is the Eckart–Young one.
    at.radio(key=extract_panel.MODE).set_value("rank").run()
    at.number_input(key=extract_panel.value_key("rank")).set_value(2).run()
    delta = model_delta(ModuleSource(tiny_llama.model), ModuleSource(tuned, label="t"), cache=False)
    lost = sum(np.sum(d.spectrum.s[2:] ** 2) for d in delta.changed)
    total = sum(np.sum(d.spectrum.s**2) for d in delta.changed)
    assert float(metric(at, "‖ΔW − B·A‖ / ‖ΔW‖")) == pytest.approx(np.sqrt(lost / total), abs=5e-5)
    # Back to all the energy, extract, and load the zip with PEFT.
    at.radio(key=extract_panel.MODE).set_value("energy").run()
    at.number_input(key=extract_panel.value_key("energy")).set_value(1.0).run()
    press(at, extract_panel.BUILD)
    assert any("Extracted: 6 LoRA matrices" in s.value for s in at.success)
    assert at.download_button(key=extract_panel.DOWNLOAD).proto.label == "Download the adapter (PEFT, zip)"
    data = at.session_state[extract_panel.BUILT][2]
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    adapter = PeftModel.from_pretrained(tiny_llama.copy(), str(tmp_path / "extracted-lora"))
    assert torch.allclose(logits(adapter), logits(tuned), atol=1e-5)
    # The extraction is a run in the store (its adapter was the download: no artifact on disk).
    [row] = RunStore(tmp_path / "runs.sqlite3").runs(kind="extraction")
    assert row.origin == "app" and row.artifacts == () and row.model == "tiny-llama"


def test_the_sessions_finetune_and_compression_are_offered(tiny_llama):
    from lowrank_lab import compress
    from lowrank_lab.data import builtin_source, prepare
    from lowrank_lab.finetune import LoraSettings, finetune
    from lowrank_lab.plan import RankPlan
    from lowrank_lab.ui.state import CompressionRun

    settings = LoraSettings(r=3, alpha=6, targets=("q_proj",), steps=3, batch_size=2, max_seq_len=32,
                            learning_rate=5e-3, eval_examples=2)  # fmt: skip
    adapter = finetune(tiny_llama, prepare(builtin_source("domain-text"), tiny_llama.tokenizer, 32), settings)
    compressed = compress(tiny_llama, RankPlan({"model.layers.0.mlp.up_proj": 10}), method="svd")
    at = start(adapter=adapter, compressed=CompressionRun(compressed, None, "plan"))
    assert at.selectbox(key=compare_inputs.SECOND).options == list(compare_inputs.LABELS.values())
    press(at, compare_view.RUN)  # the fine-tune comes first
    assert metric(at, "Matrices changed") == "2 of 15" and any("rank exactly 3" in s.value for s in at.success)
    at.selectbox(key=compare_inputs.SECOND).set_value(compare_inputs.COMPRESSED).run()
    assert any("Press **Compare**" in i.value for i in at.info)  # a new choice asks for a new comparison
    press(at, compare_view.RUN)
    assert metric(at, "Matrices changed") == "1 of 15" and metric(at, "Rank of ΔW (median)") == "54"


def test_stop_ends_a_comparison_and_an_extraction_and_keeps_nothing(tiny_llama, tuned_folder):
    folder, tuned = tuned_folder
    base = ModuleSource(tiny_llama.model, tiny_llama.tokenizer, "tiny-llama")
    second = compare_inputs.SecondModel(("test",), "tuned", lambda: ModuleSource(tuned, label="tuned"))
    # Stop pressed before the job's first report (the first second): the next report ends it.
    job = compare_view.compare_job(base, second)
    job.stop()
    assert job.start().join(timeout=120) and job.cancelled and job.result is None
    at = start(**{compare_inputs.PATH: str(folder), compare_view.JOB: (base.label, second.key, job)})
    assert any("Comparison stopped after" in i.value for i in at.info) and not at.metric
    assert compare_view.JOB not in at.session_state and compare_view.RESULT not in at.session_state
    # The extraction: stopped, it keeps no adapter; run, it keeps one for its request.
    delta = model_delta(base, second.source(), cache=False)
    settings = extract_panel.ExtractionSettings("rank", 2)
    job = extract_panel.extract_job(delta, base, second, settings)
    job.stop()
    assert job.start().join(timeout=120) and job.cancelled and job.result is None
    job = extract_panel.extract_job(delta, base, second, settings).start()
    assert job.join(timeout=120) and job.result[0].estimate.lora_modules == 6
    assert zipfile.ZipFile(io.BytesIO(job.result[1])).namelist()


@pytest.mark.parametrize(
    ("second", "words"),
    [
        ("tiny-gpt2", "LlamaForCausalLM"),
        ("tiny-llama", "identical weights"),
        ("tiny-bert", "BertModel"),
    ],
)
def test_bad_second_models_say_why(second, words):
    at = compare_with(start(), second)
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric  # nothing half-shown


def test_a_model_that_does_not_load():
    at = start()
    at.text_input(key=compare_inputs.PATH).set_value("/no/such/folder").run()
    assert any("no model named" in e.value for e in at.error)


def test_the_page_is_in_the_navigation_and_the_home_guide():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_source"] = "tiny-llama"
    at.run()
    assert "**Compare**" in [p.proto.label for p in at.get("page_link")]
    at.switch_page("pages/5_Compare.py").run()
    assert not at.exception and at.title[0].value == "Compare"
