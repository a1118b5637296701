"""Guard rails: is there enough calibration text for a data-aware method, and is a result far off dense?

Data-aware methods (``whitened``, ``pca``, and ``auto`` allocation, which prices components by
whitened decompositions) estimate each layer's input covariance XᵀX from the calibration
tokens. With fewer tokens than the layer's input width d the estimate is singular and the
ridge decides the factors; with n tokens of roughly independent inputs its condition number
is about ((1 + √(d/n)) / (1 − √(d/n)))² (Marchenko–Pastur), 9 at n = 4d and unbounded as n
approaches d. So the widest layer input sets the floor: d tokens at the very least, 4d to be
well conditioned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lowrank_lab.compress.calibration import CalibrationSettings
from lowrank_lab.compress.decompositions import linear_matrices
from lowrank_lab.models import LoadedModel

# Calibration tokens per input dimension for a well-conditioned XᵀX (condition number ≈ 9).
TOKENS_PER_INPUT_DIM = 4
# A compressed model whose perplexity is at least this many times dense is "far above" it.
FAR_ABOVE_DENSE = 2.0

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class CalibrationCheck:
    """Whether a calibration holds enough tokens for the method and allocation asked for.

    Attributes:
        tokens: calibration tokens asked for (samples × tokens per sample).
        widest_input: the largest input width d of a linear layer.
        widest_name: a layer reading that width.
        reads_calibration: False when nothing uses the calibration (plain SVD, no ``auto``).
    """

    tokens: int
    widest_input: int
    widest_name: str
    reads_calibration: bool

    @property
    def minimum(self) -> int:
        """Below this XᵀX of the widest input is singular."""
        return self.widest_input

    @property
    def recommended(self) -> int:
        """From here on XᵀX of the widest input is well conditioned."""
        return TOKENS_PER_INPUT_DIM * self.widest_input

    @property
    def level(self) -> Level:
        if not self.reads_calibration or self.tokens >= self.recommended:
            return "ok"
        return "error" if self.tokens < self.minimum else "warning"

    @property
    def condition_estimate(self) -> float:
        """Marchenko–Pastur's condition number of XᵀX for the widest input (inf below the minimum)."""
        ratio = self.widest_input / max(self.tokens, 1)
        return math.inf if ratio >= 1 else ((1 + math.sqrt(ratio)) / (1 - math.sqrt(ratio))) ** 2

    def message(self) -> str:
        """Why the calibration is too small and what to use instead ("" when it is enough)."""
        if self.level == "ok":
            return ""
        why = (
            f"{self.widest_name} reads {self.widest_input:,}-dimensional inputs, so its input statistics XᵀX "
            f"need at least {self.minimum:,} calibration tokens to be invertible and about {self.recommended:,} "
            f"({TOKENS_PER_INPUT_DIM}× its width) to be well conditioned"
        )
        if self.level == "error":
            return (
                f"{self.tokens:,} calibration tokens are too few: {why}. Below that the factors come from the "
                f"regularisation, not the data. Use samples × tokens per sample ≥ {self.recommended:,}, or "
                "method svd with the plan or uniform ranks (no calibration)"
            )
        return (
            f"{self.tokens:,} calibration tokens are few: {why} (estimated condition number "
            f"{self.condition_estimate:,.0f}). Expect noisier factors; use samples × tokens per sample ≥ "
            f"{self.recommended:,} for a reliable compression"
        )


def check_calibration(
    loaded: LoadedModel, method: str, allocation: str, settings: CalibrationSettings
) -> CalibrationCheck:
    """How ``settings`` compare with what ``method`` (and ``auto`` allocation) need on ``loaded``.

    Args:
        loaded: the model to compress.
        method: ``svd``, ``whitened`` or ``pca``.
        allocation: where the ranks come from: ``plan``, ``uniform`` or ``auto``.
        settings: the calibration asked for.
    """
    matrices = linear_matrices(loaded)
    widest = max(matrices, key=lambda m: m.shape[1], default=None)
    reads = method != "svd" or allocation == "auto"
    return CalibrationCheck(
        tokens=settings.samples * settings.seq_len,
        widest_input=widest.shape[1] if widest is not None else 0,
        widest_name=widest.name if widest is not None else "",
        reads_calibration=reads and widest is not None,
    )


def far_above_dense(dense_perplexity: float | None, perplexity: float | None) -> bool:
    """True when ``perplexity`` is at least :data:`FAR_ABOVE_DENSE` times the dense model's (or not finite)."""
    if dense_perplexity is None or perplexity is None:
        return False
    return not math.isfinite(perplexity) or perplexity >= FAR_ABOVE_DENSE * dense_perplexity
