"""The Export page (AppTest): what is offered, the announced size, and a download zip that loads back."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from lowrank_lab import LowRankLinear, load_compressed
from lowrank_lab.checkpoint import extract_zip
from lowrank_lab.comparison import Comparison, ModelFigures
from lowrank_lab.export import EXPORT_FORMATS
from lowrank_lab.ui import state
from tests.unit.export_support import adapter_on_compressed, compressed_model, logits

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "4_Export.py")


@pytest.fixture(scope="module")
def compressed(tiny_llama):
    return compressed_model(tiny_llama, keep=0.8)


@pytest.fixture(scope="module")
def run(compressed):
    """What the Ranks page keeps after "Compress and evaluate": the model and what was measured on it."""
    measured = ModelFigures(params=1, bytes=1, perplexity=612.5, latency_ms=1.0, peak_memory_bytes=1)
    comparison = Comparison(replace(measured, perplexity=500.0), measured, (), "test text", 128, 8)
    return state.CompressionRun(compressed, comparison, "plan")


@pytest.fixture
def downloads(monkeypatch):
    """Every file handed to Streamlit's media storage (what a download button serves), by file id."""
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        served[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return served


def _page(**artifacts) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[state.MODEL_SOURCE] = "tiny-llama"
    for key, value in artifacts.items():
        at.session_state[key] = value
    return at.run()


def _build(at: AppTest) -> AppTest:
    """Press "Build the zip", wait for the background build, show its download."""
    at.button(key="export_build").click().run()
    assert not at.exception, at.exception
    job = at.session_state["export_job"] if "export_job" in at.session_state else None
    if job is not None:
        assert job.join(timeout=120)
        at.run()
    return at


def _served_zip(at: AppTest, downloads: dict[str, bytes]) -> bytes:
    (button,) = at.get("download_button")
    file_id = button.proto.url.rsplit("/", 1)[-1].split(".")[0]
    return downloads[file_id]


def test_without_artifacts_the_page_says_where_to_make_them():
    at = _page()
    assert not at.exception
    assert "Ranks" in at.info[0].value and "LoRA" in at.info[0].value
    assert not at.radio


def test_compressed_checkpoint_download_is_a_zip_that_loads_back(tmp_path, compressed, run, downloads):
    at = _page(**{state.COMPRESSED: run})
    assert not at.exception and not at.error
    # 612.5 against dense 500: measured, not far above dense, so it is announced plainly.
    assert "perplexity 500.0 → 612.5 (1.23× dense" in at.success[0].value
    assert at.radio(key="export_kind").options == [EXPORT_FORMATS[k] for k in ("compressed", "dense", "rank_pattern")]
    at.selectbox(key="export_dtype").set_value("float16").run()
    kept = sum(p.numel() for p in compressed.model.parameters())
    assert at.metric[1].value == f"{kept:,}"  # stored values = kept parameters (tied once)
    assert f"{kept:,} values × 2 bytes (float16)" in at.caption[-1].value
    assert not at.get("download_button")  # nothing is built until asked
    _build(at)
    assert not at.exception and not at.error
    data = _served_zip(at, downloads)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
    assert all(n.startswith("tiny-llama-compressed/") and ".." not in n for n in names)
    (tmp_path / "d.zip").write_bytes(data)
    model = load_compressed(extract_zip(tmp_path / "d.zip", tmp_path / "d")).model
    assert sum(isinstance(m, LowRankLinear) for m in model.modules()) == len(compressed.plan)
    assert (logits(model.float()) - logits(compressed.model)).abs().max().item() < 0.05  # fp16 rounding
    size_shown = at.metric[0].value  # the announced size is the download's size, give or take headers
    assert size_shown.endswith("KiB") and abs(float(size_shown.split()[0]) - len(data) / 2**10) < 25


def test_a_bad_folder_name_is_an_error_and_a_tricky_one_is_sanitised(run, downloads):
    at = _page(**{state.COMPRESSED: run})
    at.text_input(key="export_name").set_value("..").run()
    assert at.error and "cannot name a folder" in at.error[0].value
    assert not at.button
    at.text_input(key="export_name").set_value("../../etc/my model").run()
    assert not at.error
    _build(at)
    with zipfile.ZipFile(io.BytesIO(_served_zip(at, downloads))) as zf:
        assert all(n.startswith("my-model/") for n in zf.namelist())


def test_adapter_and_merged_downloads(tmp_path, tiny_llama, downloads):
    from peft import PeftModel

    adapter = adapter_on_compressed(tiny_llama)
    at = _page(**{state.ADAPTER: adapter})
    assert at.radio(key="export_kind").options[0] == EXPORT_FORMATS["adapter"]
    assert at.radio(key="export_kind").options[1].startswith("Adapter merged into its compressed base")
    assert "compressed" in at.success[0].value
    _build(at)
    (tmp_path / "a.zip").write_bytes(_served_zip(at, downloads))
    root = extract_zip(tmp_path / "a.zip", tmp_path / "a")
    reloaded = PeftModel.from_pretrained(load_compressed(root / "base").model, str(root))
    assert (logits(reloaded) - logits(adapter.model)).abs().max().item() <= 1e-5

    at.radio(key="export_kind").set_value("merged").run()
    assert not at.get("download_button")  # the zip built for the adapter is dropped
    _build(at)
    (tmp_path / "m.zip").write_bytes(_served_zip(at, downloads))
    merged = load_compressed(tmp_path / "m.zip").model
    assert (logits(merged) - logits(adapter.model)).abs().max().item() <= 1e-4


def test_something_that_is_not_an_artifact_gives_an_error():
    at = _page(**{state.COMPRESSED: "not a model", state.ADAPTER: None})
    assert at.error and "compress again" in at.error[0].value
    assert at.info  # and the page says where to make one


def test_a_model_far_above_dense_is_a_warning_never_green(run):
    broken = replace(run.comparison, compressed=replace(run.comparison.compressed, perplexity=5000.0))
    at = _page(**{state.COMPRESSED: replace(run, comparison=broken)})
    assert not at.exception
    assert not [s for s in at.success if "Compressed model" in s.value]
    warning = at.warning[0].value
    assert "Far above the dense model" in warning and "10.0× dense" in warning and "keep more parameters" in warning


def test_the_merged_export_of_a_healed_model_says_what_it_is(tiny_llama):
    at = _page(**{state.ADAPTER: adapter_on_compressed(tiny_llama)})
    merged = at.radio(key="export_kind").options[-1]
    assert "the healed compressed checkpoint" in merged
    assert "adapter parameters" in at.success[0].value and "k adapter" not in at.success[0].value
