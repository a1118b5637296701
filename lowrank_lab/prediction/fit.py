"""How predicted loss increases map to measured ones: ΔL = a · D^b, fitted on measured runs.

D here is the anchored estimate; see :mod:`lowrank_lab.prediction` for where it comes from. Without enough measured runs the prior
a = 1, b = 1 holds, with a wide band (:data:`PRIOR_LOG_SD`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lowrank_lab.errors import SettingsError

PRIOR_LOG_SD = math.log(3.0)  # without measured runs: a factor of 3 either way on the loss increase
MIN_FIT_RUNS = 3  # a two-parameter fit needs at least three points to leave a residual
BAND_Z = 1.0  # the band is ±1 standard deviation (about 68%)
PRIOR_WEIGHT = 1.0  # the prior's spread counts as this many runs' residuals in the fitted band


@dataclass(frozen=True)
class LossFit:
    """How the raw predicted loss increase D maps to the measured one: ΔL = a · D^b.

    Attributes:
        a, b: the fitted scale and exponent (1, 1 before any run).
        log_sd: standard deviation of log(ΔL_measured / ΔL_predicted): the fitted runs'
            residuals pooled with the prior's spread (the prior's alone when there are too few).
        runs: how many measured runs the fit used (0: the prior).
    """

    a: float = 1.0
    b: float = 1.0
    log_sd: float = PRIOR_LOG_SD
    runs: int = 0

    def __post_init__(self):
        for name in ("a", "b", "log_sd"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise SettingsError(f"LossFit.{name} must be a positive finite number, got {value!r}")

    def describe(self) -> str:
        if self.runs == 0:
            return (
                "uncalibrated: the second-order estimate (anchored on the uniform plan of the same size) as it is, "
                f"until {MIN_FIT_RUNS} whitened compressions of "
                "this model have measured a loss increase"
            )
        return f"fitted on {self.runs} measured runs of this model"

    def loss_increase(self, raw: float) -> tuple[float, float, float]:
        """(predicted ΔL, low, high) in nats per token for a raw prediction ``raw``."""
        if raw <= 0:
            return 0.0, 0.0, 0.0
        mid = self.a * raw**self.b
        spread = math.exp(BAND_Z * self.log_sd)
        return mid, mid / spread, mid * spread


def fit_loss(raw: Iterable[float], measured: Iterable[float]) -> LossFit:
    """Fit ΔL = a · D^b on pairs of raw predictions D and measured loss increases ΔL.

    Pairs with D ≤ 0 or ΔL ≤ 0 (a run that measured no loss, within noise) carry no scale and
    are left out; with fewer than :data:`MIN_FIT_RUNS` left the prior holds. The exponent is
    kept in [0.5, 3], so a few odd runs cannot turn the curve over, and the band's spread pools
    the residuals with the prior's (:data:`PRIOR_WEIGHT`), so it narrows as runs accumulate.
    """
    pairs = [(d, m) for d, m in zip(raw, measured) if d is not None and m is not None and d > 0 and m > 0]
    if len(pairs) < MIN_FIT_RUNS:
        return LossFit()
    x = np.log([d for d, _ in pairs])
    y = np.log([m for _, m in pairs])
    if np.ptp(x) < 1e-9:
        b = 1.0
    else:
        b = float(np.clip(np.polyfit(x, y, 1)[0], 0.5, 3.0))
    log_a = float(np.mean(y - b * x))
    resid = y - (log_a + b * x)
    # The residual variance (two parameters fitted), pooled with the prior's as PRIOR_WEIGHT more
    # runs: three runs that happen to agree must not promise a 5% band; many runs outweigh it.
    df = len(pairs) - 2
    sd = float(np.sqrt((np.sum(resid**2) + PRIOR_WEIGHT * PRIOR_LOG_SD**2) / (df + PRIOR_WEIGHT)))
    return LossFit(math.exp(log_a), b, sd, len(pairs))
