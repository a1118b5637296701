"""Recording real runs: a compression and a fine-tune of a tiny model, saved under the store's
folder, reopened with the same outputs, deleted with their artifacts."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import torch

from lowrank_lab import CalibrationSettings, LoraSettings, compress, finetune
from lowrank_lab.cache import model_digest
from lowrank_lab.comparison import EvalSettings, compare
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.data import builtin_source, prepare
from lowrank_lab.errors import RunStoreError
from lowrank_lab.export import save_compressed
from lowrank_lab.plan import plan_keep_params
from lowrank_lab.prediction import prediction_basis
from lowrank_lab.runs import RunStore
from lowrank_lab.runs.record import record_compression, record_export, record_finetune, run_id_of
from lowrank_lab.runs.reopen import recorded_comparison, reopen_adapter, reopen_compressed
from tests.unit.export_support import logits

CAL = CalibrationSettings(samples=4, seq_len=64)
EVAL = EvalSettings(seq_len=64, max_blocks=4, prompts=("Hello",), max_new_tokens=4, latency_repeats=1)


@pytest.fixture(scope="module")
def compressed(tiny_llama):
    return compress(tiny_llama, plan_keep_params(linear_matrices(tiny_llama), 0.5), "whitened", CAL)


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


def test_a_compression_is_recorded_with_its_prediction_and_reopens_with_the_same_logits(tiny_llama, compressed, store):
    prediction = prediction_basis(tiny_llama, CAL).predict(compressed.plan)
    comparison = compare(tiny_llama, compressed, EVAL)
    digest = model_digest(tiny_llama.model)
    run_id = record_compression(
        store, compressed, allocation="uniform", keep=0.5, comparison=comparison, evaluation=EVAL,
        prediction=prediction, model_digest=digest, origin="app",
    )  # fmt: skip
    assert run_id_of(compressed) == run_id
    run = store.get(run_id)
    row = run.row
    assert (row.kind, row.model, row.method, row.allocation, row.keep, row.origin) == (
        "compression", "tiny-llama", "whitened", "uniform", 0.5, "app")  # fmt: skip
    assert row.model_digest == digest == model_digest(tiny_llama.model)  # cached, and stable
    assert row.perplexity == pytest.approx(comparison.compressed.perplexity)
    assert row.perplexity_dense == pytest.approx(comparison.dense.perplexity)
    assert row.predicted_perplexity == pytest.approx(prediction.perplexity)
    assert row.predicted_loss_raw == pytest.approx(prediction.raw_loss_increase)
    assert row.predicted_loss_anchored == pytest.approx(prediction.anchored_loss_increase)
    assert row.params_kept == compressed.params.compressed
    assert run.plan == compressed.plan
    assert run.settings["calibration"] == {"text": CAL.source, "samples": 4, "seq_len": 64}
    assert run.settings["evaluation"]["max_blocks"] == 4
    assert run.figures["generations"][0]["prompt"] == "Hello"
    checkpoint = row.artifact("checkpoint")
    assert checkpoint.owned and checkpoint.path.startswith(str(store.artifact_root))
    assert row.status == "ok"

    again = reopen_compressed(run, tiny_llama)
    assert again.plan == compressed.plan and again.method == "whitened" and again.params == compressed.params
    rebuilt = recorded_comparison(run)  # the measured figures (latency rounded to µs in the record)
    assert rebuilt.generations == comparison.generations and rebuilt.eval_tokens == comparison.eval_tokens
    for side in ("dense", "compressed"):
        got, want = getattr(rebuilt, side), getattr(comparison, side)
        assert (got.params, got.bytes, got.perplexity, got.peak_memory_bytes) == (
            want.params, want.bytes, want.perplexity, want.peak_memory_bytes)  # fmt: skip
        assert got.latency_ms == pytest.approx(want.latency_ms, abs=1e-3)
    assert torch.allclose(logits(again.model), logits(compressed.model), atol=1e-5)
    assert run_id_of(again) == run_id

    assert store.delete(run_id).removed == (checkpoint.path,)
    assert not store.artifact_path(row.uid, "checkpoint").exists() and list(store.artifact_root.iterdir()) == []


def test_a_fine_tune_of_a_recorded_compression_names_its_parent_and_reopens(tiny_llama, compressed, store):
    parent = record_compression(store, compressed, allocation="uniform", keep=0.5)
    settings = LoraSettings(r=2, steps=2, batch_size=2, max_seq_len=32, eval_every=0)
    data = prepare(builtin_source("domain-text"), tiny_llama.tokenizer, settings.max_seq_len)
    adapter = finetune(compressed, data, settings)
    run_id = record_finetune(store, adapter, data="domain-text", origin="cli")
    run = store.get(run_id)
    assert run.row.parent == parent and run.row.allocation == "compressed" and run.row.method == "lora"
    assert run.row.perplexity == pytest.approx(adapter.report.perplexity_after)
    assert run.settings["lora"]["r"] == 2 and run.settings["data"] == "domain-text"
    again = reopen_adapter(run, tiny_llama)
    assert again.base == "compressed" and again.settings == settings
    assert again.report.val_loss_after == pytest.approx(adapter.report.val_loss_after)
    assert torch.allclose(logits(again.model), logits(adapter.model), atol=1e-5)

    export_id = record_export(store, model="tiny-llama", export_kind="adapter", dtype="float16", name="x",
                              size_bytes=1234, source=again)  # fmt: skip
    assert store.get(export_id).row.parent == run_id and store.get(export_id).figures == {"bytes": 1234}


def test_an_adapter_on_the_original_model_reopens_on_a_copy(tiny_llama, store):
    settings = LoraSettings(r=2, steps=1, batch_size=2, max_seq_len=32, eval_every=0, targets=("q_proj",))
    data = prepare(builtin_source("domain-text"), tiny_llama.tokenizer, settings.max_seq_len)
    adapter = finetune(tiny_llama, data, settings)
    run = store.get(record_finetune(store, adapter))
    again = reopen_adapter(run, tiny_llama)
    assert again.base == "original" and again.settings.targets == ("q_proj",)
    assert torch.allclose(logits(again.model), logits(adapter.model), atol=1e-5)
    assert not any("lora" in n for n, _ in tiny_llama.model.named_modules())  # the shared model is untouched


def test_a_run_whose_checkpoint_was_removed_cannot_reopen_but_can_be_deleted(tiny_llama, compressed, store):
    run_id = record_compression(store, compressed, allocation="plan")
    path = store.get(run_id).row.artifact("checkpoint").path
    shutil.rmtree(path)
    run = store.get(run_id)
    assert run.row.status == "missing"
    with pytest.raises(RunStoreError, match="was removed; delete the run"):
        reopen_compressed(run, tiny_llama)
    assert store.delete(run_id).removed == ()


def test_reopening_on_another_model_is_refused(tiny_gpt2, compressed, store):
    run = store.get(record_compression(store, compressed, allocation="plan", save=False))
    with pytest.raises(RunStoreError, match="made from tiny-llama, not tiny-gpt2"):
        reopen_compressed(run, tiny_gpt2)


def test_a_failed_record_keeps_no_checkpoint(compressed, store):
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    store.timeout = 0.2
    store.close()  # the next connection takes the short timeout
    try:
        with pytest.raises(RunStoreError, match="locked"):
            record_compression(store, compressed, allocation="plan")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not store.artifact_root.exists() or list(store.artifact_root.iterdir()) == []
    assert store.count() == 0


def test_a_user_export_is_recorded_but_never_deleted_with_the_run(compressed, store, tmp_path):
    out = save_compressed(compressed, tmp_path / "mine")
    run_id = record_compression(store, compressed, allocation="plan", save=False, exported_to=out)
    row = store.get(run_id).row
    assert row.artifact("export").owned is False and row.status == "ok"
    assert store.delete(run_id).removed == ()
    assert (out / "config.json").exists()
