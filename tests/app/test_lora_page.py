"""The LoRA page (AppTest): train a few steps on a tiny model and see the figures; heal a
compressed model; a bad upload shows the error and starts no training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lowrank_lab.finetune import TrainedAdapter
from lowrank_lab.ui import state
from lowrank_lab.ui.finetune_view import JOB
from tests.unit.export_support import compressed_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "3_LoRA.py")


def _page(**session) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def _fast(at: AppTest, steps: int = 6) -> None:
    at.number_input(key="lora_steps").set_value(steps)
    at.select_slider(key="lora_seq_len").set_value(32)
    at.select_slider(key="lora_lr").set_value(1e-2)
    at.number_input(key="lora_eval").set_value(2)


def _train_to_the_end(at: AppTest) -> AppTest:
    at.button(key="lora_train").click().run()
    job = at.session_state[JOB]
    job.join(timeout=120)
    time.sleep(0.05)
    return at.run()


def test_training_a_few_steps_shows_the_figures_and_keeps_the_adapter():
    at = _page()
    assert not at.exception and not at.error
    assert at.radio(key="lora_data").value == "domain-text"
    _fast(at)
    at = _train_to_the_end(at)
    assert not at.exception and not at.error
    adapter = at.session_state[state.ADAPTER]
    assert isinstance(adapter, TrainedAdapter) and adapter.base == "original"
    report = adapter.report
    assert report.steps_done == 6 and report.val_loss_after < report.val_loss_before
    labels = [m.label for m in at.metric]
    assert labels == ["Validation loss", "Validation perplexity", "Steps", "Tokens/s"]
    assert at.metric[0].value == f"{report.val_loss_after:.3f}" and at.metric[2].value == "6/6"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in chart["data"]] == ["training loss", "validation loss"]
    assert chart["data"][1]["x"] == [0, 2, 4, 6]
    job = at.session_state[JOB]
    shown = [c.value for c in at.code]
    assert len(job.prompts) == 3 and len(shown) == 9  # each prompt, then before and after
    assert shown[0::3] == job.prompts
    assert shown[1::3] == [t or "(nothing)" for t in job.before] and shown[2::3] == [
        t or "(nothing)" for t in job.after
    ]


def test_while_training_the_page_shows_progress_and_stop_keeps_the_adapter():
    at = _page()
    _fast(at, steps=50_000)
    at.button(key="lora_train").click().run()
    job = at.session_state[JOB]
    deadline = time.monotonic() + 60
    while len(job.steps) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    at.run()
    assert not at.exception
    assert "step " in at.get("progress")[0].proto.text and "tokens/s" in at.get("progress")[0].proto.text
    assert [b.key for b in at.button] == ["lora_stop"]  # no second Train while one runs
    at.button(key="lora_stop").click().run()
    job.join(timeout=180)  # then it generates the samples after, saves the adapter and records the run
    at.run()
    assert not at.exception and not at.error
    report = at.session_state[state.ADAPTER].report
    assert report.stopped and 2 <= report.steps_done < 50_000
    assert at.metric[2].value == f"{report.steps_done}/50000"


def test_healing_the_compressed_model_from_the_ranks_page(tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    at = _page(**{state.COMPRESSED: state.CompressionRun(compressed, None, "plan")})
    at.radio(key="lora_base").set_value("compressed")
    at.radio(key="lora_data").set_value("number-words")
    at.number_input(key="lora_steps").set_value(3)
    at.select_slider(key="lora_seq_len").set_value(128)
    at = _train_to_the_end(at.run())
    assert not at.exception and not at.error
    adapter = at.session_state[state.ADAPTER]
    assert adapter.base == "compressed" and adapter.compressed is compressed


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bad.jsonl", b'{"text": "fine"}\n{not json}\n', "bad.jsonl, line 2: not valid JSON"),
        ("bad.csv", b"question,answer\nq,a\n", "no 'text' column"),
        ("bad.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_bad_upload_shows_the_error_and_trains_nothing(name, data, message):
    at = _page()
    at.radio(key="lora_data").set_value("upload").run()
    assert at.info and not [b for b in at.button if b.key == "lora_train"]  # nothing to train on yet
    at.file_uploader(key="lora_upload").upload(name, data).run()
    assert not at.exception
    assert at.error and message in at.error[0].value
    assert not [b for b in at.button if b.key == "lora_train"]
    assert JOB not in at.session_state and state.ADAPTER not in at.session_state


def test_a_good_upload_shows_a_preview():
    at = _page()
    at.radio(key="lora_data").set_value("upload").run()
    rows = "\n".join(json.dumps({"prompt": f"Q{i}", "response": f"A{i}"}) for i in range(12))
    at.file_uploader(key="lora_upload").upload("qa.jsonl", rows.encode()).run()
    assert not at.exception and not at.error
    preview = at.dataframe[0].value
    assert list(preview.columns) == ["prompt", "response"] and preview.iloc[0]["prompt"] == "Q0"


def test_settings_stay_as_set_after_a_run():
    at = _page()
    _fast(at, steps=4)
    at.radio(key="lora_data").set_value("number-words")
    at.select_slider(key="lora_r").set_value(4)
    at.select_slider(key="lora_seq_len").set_value(128)  # an instruction with its chat template
    at = _train_to_the_end(at.run())
    assert not at.exception and not at.error
    report = at.session_state[state.ADAPTER].report
    assert report.steps_done == 4 and report.data_name.startswith("number")
    # What the widgets show is what the run used, and what the next Train will use.
    assert at.number_input(key="lora_steps").value == 4
    assert at.radio(key="lora_data").value == "number-words"
    assert at.select_slider(key="lora_r").value == 4 and at.select_slider(key="lora_seq_len").value == 128
    assert at.session_state[state.ADAPTER].settings.r == 4


def test_stop_before_the_first_step_trains_nothing_and_says_so():
    at = _page()
    _fast(at, steps=50_000)
    at.button(key="lora_train").click().run()
    job = at.session_state[JOB]
    assert [b.key for b in at.button] == ["lora_stop"]  # Stop is there from the first run of the page
    at.button(key="lora_stop").click().run()
    assert job.join(timeout=60)
    at.run()
    assert not at.exception
    assert job.job.cancelled and job.result is None  # a stop before training ends it without training
    assert state.ADAPTER not in at.session_state
    assert any("nothing was trained" in i.value for i in at.info)
    assert [b.key for b in at.button] == ["lora_train"]
    at.run()
    assert not any("nothing was trained" in i.value for i in at.info)  # shown once, gone on the next action


def test_after_a_compression_the_compressed_model_is_offered_first(tiny_llama):
    compressed = compressed_model(tiny_llama, keep=0.5)
    at = _page(**{state.COMPRESSED: state.CompressionRun(compressed, None, "plan")})
    assert at.radio(key="lora_base").value == "compressed"
    assert at.radio(key="lora_base").options[0].startswith("Compressed")
    at.radio(key="lora_base").set_value("original").run()
    assert at.radio(key="lora_base").value == "original"  # a choice made stays
    newer = compressed_model(tiny_llama, keep=0.4)
    at.session_state[state.COMPRESSED] = state.CompressionRun(newer, None, "plan")
    at.run()
    assert at.radio(key="lora_base").value == "compressed"  # a new compression is offered first again
