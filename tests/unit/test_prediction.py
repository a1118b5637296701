"""Predicted error and loss from calibration: the activation-aware error is the whitened
truncation's real output error, the loss sums what each dropped component costs, and the fit
maps raw predictions onto measured ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowrank_lab import CalibrationSettings, RankPlan, allocate, compress, whitened_spectra
from lowrank_lab.compress.auto import component_costs
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.errors import SettingsError
from lowrank_lab.plan import break_even_rank, plan_keep_params
from lowrank_lab.prediction import LossFit, PredictionBasis, fit_loss, loss_scale, prediction_basis
from lowrank_lab.prediction.curves import best_curve, uniform_curve
from lowrank_lab.prediction.fit import PRIOR_LOG_SD
from lowrank_lab.spectra.engine import spectrum_of
from tests.unit.test_compress import layer_io, output_error

CAL = CalibrationSettings(samples=4, seq_len=64)


@pytest.fixture(scope="module")
def basis(tiny_llama) -> PredictionBasis:
    return prediction_basis(tiny_llama, CAL)


def test_the_activation_aware_error_is_the_whitened_truncation_s_output_error(tiny_llama, basis):
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    plan = RankPlan({names[0]: 5, names[1]: 17})
    prediction = basis.predict(plan)
    compressed = compress(tiny_llama, plan, "whitened", CAL)
    for name in names:
        x, y = layer_io(tiny_llama, name, CAL)
        measured = math.sqrt(output_error(compressed.model.get_submodule(name), x, y) / float(y.square().sum()))
        assert prediction.matrix_errors[basis.index[name]] == pytest.approx(measured, rel=2e-3)
        assert basis.error_curve(name)[plan.get(name) - 1] == pytest.approx(measured, rel=2e-3)


def test_kinds_and_the_model_stack_their_matrices(tiny_llama, basis):
    plan = plan_keep_params(linear_matrices(tiny_llama), 0.5)
    p = basis.predict(plan)
    ws = whitened_spectra(tiny_llama, CAL)
    dropped, total = {}, {}
    for sp in ws:
        r = plan.get(sp.name)
        lost = float((sp.s[r:] ** 2).sum()) if r is not None and r < break_even_rank(sp.shape) else 0.0
        dropped[sp.kind] = dropped.get(sp.kind, 0.0) + lost
        total[sp.kind] = total.get(sp.kind, 0.0) + float((sp.s**2).sum())
    for kind in dropped:
        assert p.kind_errors[kind] == pytest.approx(math.sqrt(dropped[kind] / total[kind]), rel=1e-9)
    assert p.activation_error == pytest.approx(math.sqrt(sum(dropped.values()) / sum(total.values())), rel=1e-9)


def test_the_raw_loss_increase_sums_the_dropped_costs(tiny_llama, basis):
    costs = component_costs(tiny_llama, CAL)
    plan = plan_keep_params(linear_matrices(tiny_llama), 0.4)
    expected = sum(float(costs[n][r:].sum()) for n, r in plan.ranks if r < basis.break_even[basis.index[n]])
    p = basis.predict(plan)
    assert p.raw_loss_increase == pytest.approx(loss_scale(CAL.samples, CAL.seq_len) * expected, rel=1e-9)
    assert loss_scale(4, 64) == (4 * 63) ** 2 / (2 * 4 * 64)
    # The prior maps the anchored estimate onto predicted as it is, with a factor-of-3 band.
    assert p.loss_increase == pytest.approx(p.anchored_loss_increase)
    assert p.loss_high / p.loss_increase == pytest.approx(math.exp(PRIOR_LOG_SD))
    assert p.perplexity == pytest.approx(basis.dense_perplexity * math.exp(p.loss_increase))
    assert p.perplexity_low < p.perplexity < p.perplexity_high


def test_dense_and_break_even_matrices_predict_nothing_lost(tiny_llama, basis):
    p = basis.predict(RankPlan())
    assert p.activation_error == 0 and p.raw_loss_increase == 0 and p.perplexity == basis.dense_perplexity
    m = linear_matrices(tiny_llama)[0]
    at_break_even = basis.predict(RankPlan({m.name: break_even_rank(m.shape)}))
    assert at_break_even.matrix_errors[basis.index[m.name]] == 0
    unknown = basis.predict(RankPlan({"not.a.module": 3}))
    assert unknown.activation_error == 0


def test_fewer_ranks_never_predict_less_loss(tiny_llama, basis):
    mats = linear_matrices(tiny_llama)
    raws = [basis.predict(plan_keep_params(mats, k)).raw_loss_increase for k in (0.9, 0.7, 0.5, 0.3, 0.1)]
    errors = [basis.predict(plan_keep_params(mats, k)).activation_error for k in (0.9, 0.7, 0.5, 0.3, 0.1)]
    assert raws == sorted(raws) and errors == sorted(errors) and raws[-1] > raws[0]


def _uniform_anchor(tiny_llama, basis, kept: float) -> float:
    return _uniform_anchor_of(basis, linear_matrices(tiny_llama), kept)


def _uniform_anchor_of(basis, mats, kept: float) -> float:
    """D of the uniform plan keeping ``kept``, read between uniform RankPlans predicted one by one."""
    points = [basis.predict(plan_keep_params(list(mats), k)) for k in np.linspace(0.02, 1.0, 99)]
    points.sort(key=lambda p: p.linear_kept)
    return float(np.interp(kept, [p.linear_kept for p in points], [p.raw_loss_increase for p in points]))


def test_a_uniform_plan_is_its_own_anchor(tiny_llama, basis):
    for keep in (0.25, 0.5, 0.75):  # on the basis's grid of uniform plans
        p = basis.predict(plan_keep_params(linear_matrices(tiny_llama), keep))
        assert p.raw_loss_increase > 0 and p.anchored_loss_increase == pytest.approx(p.raw_loss_increase, rel=1e-9)
        assert p.linear_kept == pytest.approx(keep, abs=0.05)


def test_a_plan_chosen_on_the_costs_trusts_half_its_advantage_over_uniform(tiny_llama, basis):
    plan = allocate(tiny_llama, 0.5, "auto", "whitened", CAL)
    p = basis.predict(plan)
    anchor = _uniform_anchor(tiny_llama, basis, p.linear_kept)
    assert p.raw_loss_increase < anchor  # auto's plan is predicted better than uniform ...
    # ... and the prediction trusts half of that, in log: the geometric mean of the two.
    assert p.anchored_loss_increase == pytest.approx(math.sqrt(p.raw_loss_increase * anchor), rel=0.02)


def test_a_plan_predicted_worse_than_uniform_keeps_its_raw_estimate(tiny_llama):
    # Two matrices of one shape: every component of the first costs 10⁴ times one of the second's.
    first, second = [m for m in linear_matrices(tiny_llama) if m.shape == linear_matrices(tiny_llama)[0].shape][:2]
    k = min(first.shape)
    spectra = [spectrum_of(m, np.linspace(2.0, 1.0, k)) for m in (first, second)]
    synthetic = PredictionBasis(spectra, {first.name: np.full(k, 100.0), second.name: np.full(k, 0.01)}, 1.0)
    expensive = synthetic.predict(RankPlan({first.name: 1}))  # cuts where the loss is
    anchor = _uniform_anchor_of(synthetic, (first, second), expensive.linear_kept)
    assert expensive.raw_loss_increase > anchor and expensive.anchored_loss_increase == expensive.raw_loss_increase
    cheap = synthetic.predict(RankPlan({second.name: 1}))  # the same size, cut where nothing is lost
    anchor = _uniform_anchor_of(synthetic, (first, second), cheap.linear_kept)
    assert cheap.raw_loss_increase < anchor
    assert cheap.anchored_loss_increase == pytest.approx(math.sqrt(cheap.raw_loss_increase * anchor), rel=0.02)


def test_an_encoder_gets_errors_but_no_loss(tiny_bert):
    basis = prediction_basis(tiny_bert, CAL)
    p = basis.predict(plan_keep_params(linear_matrices(tiny_bert), 0.5))
    assert p.activation_error > 0
    assert p.raw_loss_increase is None and p.perplexity is None and basis.dense_perplexity is None
    assert best_curve(basis) is None and uniform_curve(basis) is None


def test_costs_that_do_not_match_the_spectra_are_refused(tiny_llama):
    sp = spectrum_of(linear_matrices(tiny_llama)[0], np.array([3.0, 2.0, 1.0]))
    with pytest.raises(SettingsError, match="same calibration"):
        PredictionBasis([sp], {sp.name: np.ones(2)}, 1.0)


def test_the_best_curve_is_never_above_the_uniform_curve(basis):
    best, uniform = best_curve(basis), uniform_curve(basis)
    assert np.all(np.diff(best.linear_kept) >= 0)
    assert best.perplexity[-1] == pytest.approx(basis.dense_perplexity)  # everything kept
    # Interpolated at the uniform plans' sizes, the best plans predict no more loss.
    inside = (uniform.linear_kept >= best.linear_kept[0]) & (uniform.linear_kept <= best.linear_kept[-1])
    best_at = np.interp(uniform.linear_kept[inside], best.linear_kept, np.log(best.perplexity))
    assert np.all(best_at <= np.log(uniform.perplexity[inside]) + 1e-6)
    assert np.all(best.low <= best.perplexity) and np.all(best.perplexity <= best.high)


def test_the_fit_recovers_a_power_law_and_its_spread():
    raw = np.geomspace(0.01, 2.0, 9)
    fit = fit_loss(raw, 0.3 * raw**1.4)
    assert (fit.a, fit.b, fit.runs) == (pytest.approx(0.3), pytest.approx(1.4), 9)
    # Exact data: only the prior's spread, counted as one run among 7 + 1 residual degrees of freedom.
    assert fit.log_sd == pytest.approx(PRIOR_LOG_SD / math.sqrt(8))
    noisy = 0.3 * raw**1.4 * np.exp(np.resize([0.2, -0.2], 9))
    assert fit.log_sd < fit_loss(raw, noisy).log_sd < PRIOR_LOG_SD
    few = fit_loss(raw[:3], 0.3 * raw[:3] ** 1.4)
    assert few.log_sd == pytest.approx(PRIOR_LOG_SD / math.sqrt(2))  # three runs that agree promise little
    mid, low, high = fit.loss_increase(1.0)
    assert mid == pytest.approx(0.3) and low < mid < high


def test_the_fit_keeps_the_prior_without_enough_runs_and_ignores_runs_that_lost_nothing():
    assert fit_loss([0.1, 0.2], [0.3, 0.5]) == LossFit()
    assert fit_loss([0.1, 0.2, 0.3, 0.0], [0.3, -0.01, 0.5, 0.2]) == LossFit()  # two usable pairs
    steep = fit_loss([0.1, 0.2, 0.4], [1e-6, 1.0, 1e6])
    assert steep.b == 3.0  # clipped: three odd runs cannot turn the curve into a wall


@pytest.mark.parametrize("bad", [dict(a=0), dict(b=-1), dict(log_sd=float("nan"))])
def test_a_bad_fit_is_refused(bad):
    with pytest.raises(SettingsError):
        LossFit(**bad)
