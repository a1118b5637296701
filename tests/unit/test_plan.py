"""Rank plans: validation, JSON, presets, and the Eckart–Young summary against real truncations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowrank_lab import InvalidRankPlan, RankPlan, compute_spectra, summarize_plan, weight_matrices
from lowrank_lab.plan import (
    break_even_rank,
    factorizes,
    plan_fixed_rank,
    plan_keep_energy,
    plan_keep_params,
    rank_errors,
)
from lowrank_lab.spectra import SpectrumCache


@pytest.fixture(scope="module")
def spectra(tiny_llama, tmp_path_factory):
    return compute_spectra(tiny_llama.model, cache=SpectrumCache(tmp_path_factory.mktemp("spectra")))


def test_break_even():
    assert break_even_rank((64, 64)) == 32
    assert factorizes(31, (64, 64)) and not factorizes(32, (64, 64))
    assert break_even_rank((160, 64)) == 46  # 160·64/224 = 45.7
    assert factorizes(45, (160, 64)) and not factorizes(46, (160, 64))


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ({"a": 0}, "positive integer"),
        ({"a": -3}, "positive integer"),
        ({"a": 2.5}, "positive integer"),
        ({"a": True}, "positive integer"),
        ({"a": "8"}, "positive integer"),
        ({"": 4}, "non-empty"),
    ],
)
def test_bad_ranks_are_refused(ranks, message):
    with pytest.raises(InvalidRankPlan, match=message):
        RankPlan(ranks)


def test_validate_names_unknown_modules_and_out_of_range(spectra):
    with pytest.raises(InvalidRankPlan, match="model.layers.9.mlp.up_proj") as err:
        RankPlan({"model.layers.9.mlp.up_proj": 4}).validate(spectra)
    assert "named_modules" in str(err.value)
    with pytest.raises(InvalidRankPlan, match="above its full rank 32"):
        RankPlan({"model.layers.0.self_attn.k_proj": 33}).validate(spectra)
    RankPlan({"model.layers.0.self_attn.k_proj": 32}).validate(spectra)  # full rank is allowed


def test_json_round_trip_and_bare_mapping():
    plan = RankPlan({"b": 3, "a": 7})
    text = plan.to_json(model="tiny-llama")
    assert json.loads(text)["format"] == "lowrank_lab.rank_plan"
    assert RankPlan.from_json(text) == plan
    assert RankPlan.from_json('{"a": 7, "b": 3}') == plan
    assert hash(RankPlan.from_json(text)) == hash(plan)


@pytest.mark.parametrize("text", ["{nope", "[1, 2]", '"a"', '{"ranks": [1]}', '{"a": "x"}', b"\xff\xfe"])
def test_malformed_json_is_refused(text):
    with pytest.raises(InvalidRankPlan):
        RankPlan.from_json(text)


def test_rank_errors_match_real_truncation(tiny_llama, spectra):
    sp = spectra[3]
    w = {m.name: m for m in weight_matrices(tiny_llama.model)}[sp.name].matrix().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    ranks = np.array([0, 1, 5, 17, sp.full_rank])
    fro, spec = rank_errors(sp, ranks)
    for r, f, e in zip(ranks, fro, spec):
        approx = (u[:, :r] * s[:r]) @ vh[:r]
        assert f == pytest.approx(float(torch.linalg.norm(w - approx) / torch.linalg.norm(w)), abs=1e-9)
        assert e == pytest.approx(float(torch.linalg.matrix_norm(w - approx, ord=2) / s[0]), abs=1e-9)
    assert np.all(np.diff(fro) <= 0)  # error falls as rank rises


def test_summary_totals_are_sums_over_matrices(tiny_llama, spectra):
    plan = plan_keep_params(spectra, 0.5)
    summary = summarize_plan(spectra, plan, tiny_llama.n_params)
    linear = [r for r in summary.rows if not r.is_embedding]
    assert summary.linear_params_dense == sum(r.params_dense for r in linear)
    assert summary.linear_params_kept == sum(r.params_kept for r in linear)
    assert summary.params_saved == sum(r.params_dense - r.params_kept for r in summary.rows)
    assert summary.model_params_kept == tiny_llama.n_params - summary.params_saved
    assert 0.45 < summary.saved_fraction_of_linear < 0.55
    assert summary.saved_fraction_of_model < summary.saved_fraction_of_linear
    assert summary.model_bytes(2) * 2 == summary.model_bytes(4)
    assert summary.n_factorized == len(plan)


def test_dense_plan_has_zero_error_and_saves_nothing(spectra):
    summary = summarize_plan(spectra, RankPlan())
    assert summary.params_saved == 0 and summary.weighted_error == 0


def test_rank_past_break_even_means_keep_dense(spectra):
    name = spectra[1].name
    summary = summarize_plan(spectra, RankPlan({name: break_even_rank(spectra[1].shape)}))
    row = summary.row(name)
    assert not row.factorized and row.params_kept == row.params_dense and row.rel_frobenius_error == 0


def test_weighted_error_falls_as_ranks_rise(spectra):
    errors = [summarize_plan(spectra, plan_keep_params(spectra, f)).weighted_error for f in (0.2, 0.4, 0.6, 0.8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] > 0


def test_presets(spectra):
    energy = plan_keep_energy(spectra, 0.9)
    for sp in spectra:
        r = energy.get(sp.name)
        if r is not None:
            assert sp.cumulative_energy()[r - 1] >= 0.9 - 1e-12
            assert r == 1 or sp.cumulative_energy()[r - 2] < 0.9
    fixed = plan_fixed_rank(spectra, 8)
    assert set(fixed.as_dict().values()) == {8}
    assert not any(sp.is_embedding for sp in spectra if sp.name in fixed.as_dict())
    assert len(plan_fixed_rank(spectra, 1000)) == 0  # past break-even everywhere: all dense
    with pytest.raises(InvalidRankPlan, match=r"\(0, 1\]"):
        plan_keep_params(spectra, 1.5)
    with pytest.raises(InvalidRankPlan, match=r"\(0, 1\]"):
        plan_keep_energy(spectra, 0)
    with pytest.raises(InvalidRankPlan, match="positive integer"):
        plan_fixed_rank(spectra, 0)
