"""Bad input to compression: each gets its own LowrankLabError subclass and a message naming the fix."""

from __future__ import annotations

import dataclasses

import pytest

from lowrank_lab import CalibrationSettings, DataError, InvalidRankPlan, RankPlan, SettingsError, allocate, compress
from lowrank_lab.compress import whitened_spectra


def test_plan_naming_missing_modules(tiny_llama):
    with pytest.raises(InvalidRankPlan, match="does not have: model.layers.9.mlp.up_proj"):
        compress(tiny_llama, RankPlan({"model.layers.9.mlp.up_proj": 4}), "svd")


def test_rank_above_full_rank(tiny_llama):
    with pytest.raises(InvalidRankPlan, match="above its full rank 64"):
        compress(tiny_llama, RankPlan({"model.layers.0.self_attn.q_proj": 65}), "svd")


@pytest.mark.parametrize("rank", [0, -3])
def test_rank_not_positive(rank):
    with pytest.raises(InvalidRankPlan, match="positive integer"):
        RankPlan({"model.layers.0.self_attn.q_proj": rank})


def test_embedding_in_plan(tiny_llama):
    with pytest.raises(InvalidRankPlan, match="embedding"):
        compress(tiny_llama, RankPlan({"model.embed_tokens": 4}), "svd")


def test_not_a_plan(tiny_llama):
    with pytest.raises(InvalidRankPlan, match="RankPlan"):
        compress(tiny_llama, {"model.layers.0.self_attn.q_proj": 4}, "svd")


def test_unknown_method(tiny_llama):
    with pytest.raises(SettingsError, match="unknown compression method 'qr'"):
        compress(tiny_llama, RankPlan({"model.layers.0.self_attn.q_proj": 4}), "qr")


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_calibration_text(text):
    with pytest.raises(DataError, match="calibration text is empty"):
        CalibrationSettings(text=text)


def test_too_short_calibration_text(tiny_llama):
    short = CalibrationSettings(samples=4, seq_len=64, text="Only a few words here.", source="upload")
    with pytest.raises(DataError, match="more text, or fewer or shorter samples"):
        compress(tiny_llama, allocate(tiny_llama, 0.5), "whitened", short)
    with pytest.raises(DataError, match="more text"):
        whitened_spectra(tiny_llama, short)


@pytest.mark.parametrize(("field", "value"), [("samples", 0), ("seq_len", 1), ("samples", 2.5)])
def test_calibration_sizes_out_of_range(field, value):
    with pytest.raises(SettingsError, match=f"calibration {field}"):
        CalibrationSettings(**{field: value})


@pytest.mark.parametrize("method", ["whitened", "pca"])
def test_calibration_without_tokenizer(tiny_llama, method):
    bare = dataclasses.replace(tiny_llama, tokenizer=None)
    with pytest.raises(DataError, match="no tokenizer.*'svd'"):
        compress(bare, allocate(bare, 0.5), method)


@pytest.mark.parametrize("keep", [0, -0.1, 1.5, float("nan"), True, "0.5"])
@pytest.mark.parametrize("strategy", ["uniform", "auto"])
def test_budget_outside_unit_interval(tiny_llama, keep, strategy):
    with pytest.raises(SettingsError, match=r"in \(0, 1\]"):
        allocate(tiny_llama, keep, strategy)


def test_unknown_strategy(tiny_llama):
    with pytest.raises(SettingsError, match="unknown allocation strategy 'greedy'"):
        allocate(tiny_llama, 0.5, "greedy")


def test_auto_on_an_encoder_says_use_uniform(tiny_bert):
    with pytest.raises(SettingsError, match="encoder with no such loss; use strategy 'uniform'"):
        allocate(tiny_bert, 0.5, "auto", calibration=CalibrationSettings(4, 32))
    plan = allocate(tiny_bert, 0.5, "uniform")  # uniform works, and so does data-aware compression
    assert len(compress(tiny_bert, plan, "whitened", CalibrationSettings(4, 32)).plan) > 0
