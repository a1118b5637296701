"""Per-matrix rows, error-vs-rank curves and trade-off curves of the Ranks page, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from lowrank_lab import compute_spectra, plan_keep_params, summarize_plan
from lowrank_lab.plan import (
    PlanCalculator,
    RankPlan,
    error_curve,
    kind_totals,
    plan_energy_per_param,
    plan_point,
    rank_errors,
    tradeoff_curves,
)
from lowrank_lab.plan.curves import summary_records
from lowrank_lab.ui.rank_charts import CURVE_LABELS


@pytest.fixture(scope="module")
def spectra(tiny_llama):
    return compute_spectra(tiny_llama.model, cache=False)


def test_summary_records_add_up_to_the_totals(spectra, tiny_llama):
    summary = summarize_plan(spectra, plan_keep_params(spectra, 0.4), tiny_llama.n_params)
    rows = summary_records(summary)
    assert len(rows) == len(spectra)
    assert sum(r["params_saved"] for r in rows) == summary.params_saved > 0
    for r in rows:
        assert r["params_kept"] + r["params_saved"] == r["params_dense"]
        assert (r["rank"] is None) == r["dense"]
        if r["dense"]:
            assert r["rel_frobenius_error"] == r["spectral_error"] == 0.0


def test_error_curve_falls_as_rank_rises_and_matches_a_real_svd(spectra, tiny_llama):
    sp = spectra[1]
    curve = error_curve(sp)
    assert curve.ranks[0] == 1 and curve.ranks[-1] == sp.full_rank
    assert np.all(np.diff(curve.rel_frobenius) <= 1e-12) and curve.rel_frobenius[-1] == pytest.approx(0, abs=1e-6)
    assert np.all(np.diff(curve.spectral) <= 1e-12)
    w = dict(tiny_llama.model.named_modules())[sp.name].weight.double()
    u, s, vh = np.linalg.svd(w.numpy())
    for r in (1, 5, 20):
        wr = (u[:, :r] * s[:r]) @ vh[:r]
        rel = np.linalg.norm(w.numpy() - wr) / np.linalg.norm(w.numpy())
        assert curve.rel_frobenius[r - 1] == pytest.approx(rel, rel=1e-6)
        assert curve.spectral[r - 1] == pytest.approx(s[r] / s[0], rel=1e-6)
    m, n = sp.shape
    assert curve.params_fraction[curve.break_even - 1] >= 1 > curve.params_fraction[curve.break_even - 2]
    assert curve.params_fraction[9] == pytest.approx(10 * (m + n) / (m * n))


def test_plan_point_of_the_dense_plan(spectra):
    assert plan_point(summarize_plan(spectra, RankPlan({}))) == (1.0, 0.0)


def test_tradeoff_curves_trade_size_for_error(spectra):
    calls = []
    curves = tradeoff_curves(spectra, n_points=12, progress=lambda d, t, m: calls.append((d, t)))
    assert [c.label for c in curves] == list(CURVE_LABELS)
    assert calls[-1] == (4, 4)
    for c in curves:
        assert len(c.settings) == len(c.linear_kept) == len(c.weighted_error) > 3
        assert np.all((c.linear_kept > 0) & (c.linear_kept <= 1)) and np.all(c.weighted_error >= 0)
        order = np.argsort(c.linear_kept, kind="stable")
        # Keeping more parameters never costs more error along one family.
        assert np.all(np.diff(c.weighted_error[order]) <= 1e-9), c.label


def test_best_allocation_is_no_worse_than_uniform_presets(spectra):
    curves = {c.label: c for c in tradeoff_curves(spectra, n_points=16)}
    best = curves["best"]
    order = np.argsort(best.linear_kept)
    for label in ("keep-params", "fixed-rank"):
        c = curves[label]
        inside = (c.linear_kept > best.linear_kept.min()) & (c.linear_kept < best.linear_kept.max())
        frontier = np.interp(c.linear_kept[inside], best.linear_kept[order], best.weighted_error[order])
        # Linear interpolation between frontier points over-estimates it a little, hence the slack.
        assert np.all(frontier <= c.weighted_error[inside] + 0.05), label


def test_energy_per_param_threshold_orders_ranks(spectra):
    loose, tight = plan_energy_per_param(spectra, 1e-6), plan_energy_per_param(spectra, 1e-2)
    kept = [summarize_plan(spectra, p).linear_params_kept for p in (tight, loose)]
    assert kept[0] < kept[1]
    assert min(r for _, r in tight.ranks) == 1  # nothing is dropped altogether
    assert all(not sp.is_embedding for sp in spectra if sp.name in loose.as_dict())


def test_kind_totals_sum_to_the_linear_totals(spectra):
    summary = summarize_plan(spectra, RankPlan({"model.layers.0.mlp.up_proj": 4, "model.layers.1.mlp.up_proj": 8}))
    totals = kind_totals(spectra, summary)
    assert list(totals)[0] == "self_attn.q_proj" and "model.embed_tokens" not in totals
    assert sum(t.params_kept for t in totals.values()) == summary.linear_params_kept
    up = totals["mlp.up_proj"]
    assert (up.matrices, up.factorized, up.params_kept) == (2, 2, (4 + 8) * (160 + 64))
    assert 0 < up.rel_frobenius_error < 1 and totals["self_attn.q_proj"].rel_frobenius_error == 0
    # The kinds' errors combine into the weighted error with their energies as weights.
    energy = {k: sum(sp.metrics.frobenius**2 for sp in spectra if sp.kind == k) for k in totals}
    lost = sum(energy[k] * t.rel_frobenius_error**2 for k, t in totals.items())
    assert (lost / sum(energy.values())) ** 0.5 == pytest.approx(summary.weighted_error)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_plan_calculator_rows_match_eckart_young(request, fixture):
    """The calculator's per-row errors equal rank_errors (checked against real SVD truncations
    in test_plan.py), and its totals are the sums of its rows."""
    loaded = request.getfixturevalue(fixture)
    spectra = compute_spectra(loaded.model, cache=False)
    calc = PlanCalculator(spectra)
    plans = [
        RankPlan({}),
        plan_keep_params(spectra, 0.3),
        RankPlan({sp.name: 1 + i % 9 for i, sp in enumerate(spectra)}),  # embeddings too
        RankPlan({sp.name: sp.full_rank for sp in spectra}),  # all at full rank: dense
    ]
    for plan in plans:
        summary = calc.summarize(plan, loaded.n_params)
        assert summary.params_saved == sum(r.params_dense - r.params_kept for r in summary.rows)
        for sp, row in zip(spectra, summary.rows):
            if row.factorized:
                fro, spec = rank_errors(sp, np.array([row.rank]))
                assert row.rel_frobenius_error == pytest.approx(float(fro[0]), rel=1e-12, abs=1e-15)
                assert row.spectral_error == pytest.approx(float(spec[0]), rel=1e-12, abs=1e-15)
                assert row.params_kept == row.rank * sum(sp.shape)
            else:
                assert row.rel_frobenius_error == 0 and row.params_kept == row.params_dense
