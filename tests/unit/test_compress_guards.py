"""Guard rails: the calibration floor per method and allocation, and "far above dense"."""

from __future__ import annotations

import math

import pytest

from lowrank_lab.compress import CalibrationSettings
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.compress.guards import FAR_ABOVE_DENSE, TOKENS_PER_INPUT_DIM, check_calibration, far_above_dense


def test_the_widest_layer_input_sets_the_floor(tiny_llama):
    widest = max(m.shape[1] for m in linear_matrices(tiny_llama))
    check = check_calibration(tiny_llama, "whitened", "plan", CalibrationSettings(samples=1, seq_len=8))
    assert check.widest_input == widest and check.minimum == widest
    assert check.recommended == TOKENS_PER_INPUT_DIM * widest
    assert check.level == "error" and math.isinf(check.condition_estimate)
    message = check.message()
    assert "8 calibration tokens are too few" in message and f"{widest:,}" in message and check.widest_name in message
    assert "method svd" in message  # a way out that needs no calibration


@pytest.mark.parametrize(
    ("method", "allocation", "reads"),
    [("svd", "plan", False), ("svd", "uniform", False), ("svd", "auto", True), ("whitened", "plan", True),
     ("pca", "uniform", True)],
)  # fmt: skip
def test_which_runs_read_the_calibration(tiny_llama, method, allocation, reads):
    check = check_calibration(tiny_llama, method, allocation, CalibrationSettings(samples=1, seq_len=8))
    assert check.reads_calibration is reads
    assert check.level == ("error" if reads else "ok")
    assert (check.message() == "") is (not reads)


def test_between_the_floor_and_the_recommendation_is_a_warning(tiny_llama):
    widest = max(m.shape[1] for m in linear_matrices(tiny_llama))
    between = check_calibration(tiny_llama, "pca", "plan", CalibrationSettings(samples=2, seq_len=widest))
    assert between.level == "warning"
    assert 9 < between.condition_estimate < math.inf  # 2d tokens: ((1+√½)/(1−√½))² ≈ 34
    assert "condition number" in between.message()
    enough = check_calibration(tiny_llama, "pca", "plan", CalibrationSettings(samples=4, seq_len=widest))
    assert enough.level == "ok" and enough.condition_estimate == pytest.approx(9.0)


def test_far_above_dense():
    assert far_above_dense(10.0, FAR_ABOVE_DENSE * 10.0)
    assert far_above_dense(10.0, math.inf) and far_above_dense(10.0, math.nan)
    assert not far_above_dense(10.0, 19.9)
    assert not far_above_dense(None, 1e9) and not far_above_dense(10.0, None)
