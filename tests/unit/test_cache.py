"""Explicit keyed caches: content keys for models, one computation per key, no blocking across keys, a byte limit."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from lowrank_lab import CalibrationSettings, ModelSpec, load_model, whitened_spectra
from lowrank_lab.cache import KeyedCache, model_digest, nbytes

FEW = CalibrationSettings(samples=2, seq_len=32)


def test_model_digest_follows_the_weights_not_the_object(tiny_llama):
    same = load_model("tiny-llama")  # another object with the same weights
    assert same.model is not tiny_llama.model
    assert model_digest(same.model) == model_digest(tiny_llama.model)
    assert model_digest(load_model(ModelSpec("tiny-llama", seed=1)).model) != model_digest(tiny_llama.model)
    changed = tiny_llama.copy()
    with torch.no_grad():
        changed.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    assert model_digest(changed) != model_digest(tiny_llama.model)
    assert model_digest(load_model("tiny-gpt2").model) != model_digest(tiny_llama.model)


def test_one_computation_per_key_and_the_waiter_gets_its_value():
    cache = KeyedCache(max_bytes=2**20)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> torch.Tensor:
        calls.append(1)
        started.set()
        release.wait(10)
        return torch.zeros(4)

    results: list[torch.Tensor] = []
    first = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(calls) == 1 and len(results) == 2 and results[0] is results[1]


def test_a_long_computation_does_not_block_other_keys():
    cache = KeyedCache(max_bytes=2**20)
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "slow"

    worker = threading.Thread(target=lambda: cache.get_or_compute("calibration", slow))
    worker.start()
    assert started.wait(10)
    try:
        # While "calibration" is being computed (its key locked), another key is served at once.
        assert cache.get_or_compute("spectra", lambda: "fast") == "fast"
        assert "spectra" in cache and "calibration" not in cache
    finally:
        release.set()
        worker.join(10)
    assert cache.get_or_compute("calibration", lambda: "recomputed") == "slow"


def test_the_byte_limit_drops_the_least_recently_used():
    cache = KeyedCache(max_bytes=100)
    tensor = lambda: torch.zeros(10, dtype=torch.float32)  # noqa: E731 - 40 bytes each
    a = cache.get_or_compute("a", tensor)
    cache.get_or_compute("b", tensor)
    assert cache.get_or_compute("a", tensor) is a  # a hit, and now the most recently used
    cache.get_or_compute("c", tensor)  # 120 bytes: "b" goes
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.nbytes == 80
    big = cache.get_or_compute("big", lambda: torch.zeros(100))  # over the limit: returned, not kept
    assert big.numel() == 100 and "big" not in cache and len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_a_failed_computation_stores_nothing():
    cache = KeyedCache(max_bytes=2**20)

    def broken():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", broken)
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: 3) == 3


def test_nbytes_counts_tensors_and_arrays_inside_containers_once():
    @dataclass
    class Holder:
        t: torch.Tensor
        a: np.ndarray

    shared = torch.zeros(8, dtype=torch.float64)  # 64 bytes
    value = {"x": [shared, shared], "h": Holder(torch.zeros(2, 3), np.zeros(4, dtype=np.float32))}
    assert nbytes(value) == 64 + 24 + 16
    assert nbytes("text") == 0


def test_calibration_is_shared_by_equal_models_and_redone_for_a_changed_one(tiny_llama):
    cache = KeyedCache(name="calibration")
    messages: list[str] = []
    record = lambda done, total, message: messages.append(message)  # noqa: E731
    first = whitened_spectra(tiny_llama, FEW, progress=record, cache=cache)
    assert any(m.startswith("whitened spectra") for m in messages)  # computed: the calibration pass ran
    messages.clear()
    again = whitened_spectra(load_model("tiny-llama"), FEW, progress=record, cache=cache)  # equal weights: a hit
    assert messages == [] and [sp.s.tolist() for sp in again] == [sp.s.tolist() for sp in first]
    changed = load_model("tiny-llama")
    with torch.no_grad():
        changed.model.model.layers[0].mlp.up_proj.weight.mul_(2)
    whitened_spectra(changed, FEW, progress=record, cache=cache)
    assert any(m.startswith("whitened spectra") for m in messages)  # a changed weight is a different model


def test_model_digest_ignores_what_saving_writes_into_the_config(tiny_llama, tmp_path):
    model = tiny_llama.copy()
    before = model_digest(model)
    model.save_pretrained(tmp_path)  # transformers writes the storage dtype into model.config
    assert model_digest(model) == before


def test_get_reads_without_computing():
    cache = KeyedCache(name="test")
    assert cache.get("a") is None and cache.get("a", 5) == 5 and "a" not in cache
    cache.get_or_compute("a", lambda: 1)
    assert cache.get("a") == 1
