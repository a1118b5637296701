"""Why a plan has its ranks: the candidate plans an allocation considered and how each scored.

One frozen object serves the command line (its JSON), the app (the compress panel says what
``auto`` chose and why) and anyone recording runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowrank_lab.errors import SettingsError
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.plan import RankPlan


@dataclass(frozen=True)
class Candidate:
    """One rank plan the allocation considered.

    Attributes:
        name: how it was made (``uniform``, ``loss-weighted``, ...).
        plan: its ranks.
        linear_params: the linear layers' parameters it keeps.
        calibration_loss: its mean next-token loss on the scoring blocks (NaN: not scored).
    """

    name: str
    plan: RankPlan
    linear_params: int
    calibration_loss: float = math.nan


@dataclass(frozen=True)
class AllocationReport:
    """Why the plan has these ranks.

    Attributes:
        strategy: ``uniform``, ``auto`` or ``plan file``.
        keep: the budget (fraction of linear parameters kept), None for a plan given as is.
        candidates: the plans considered, with their scores.
        chosen: the index of the one returned.
        scoring: how candidates were scored, in words ("" when there was nothing to score).

    Raises:
        SettingsError: no candidate, or ``chosen`` does not index one.
    """

    strategy: str
    keep: float | None
    candidates: tuple[Candidate, ...] = ()
    chosen: int = 0
    scoring: str = ""

    def __post_init__(self) -> None:
        if not self.candidates or not 0 <= self.chosen < len(self.candidates):
            raise SettingsError(
                f"an allocation report needs its candidates and the index of the chosen one, got "
                f"{len(self.candidates)} candidates and chosen={self.chosen!r}"
            )

    @property
    def plan(self) -> RankPlan:
        """The chosen plan."""
        return self.candidates[self.chosen].plan

    @property
    def winner(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "keep": self.keep,
            "scoring": self.scoring,
            "candidates": [
                {
                    "name": c.name,
                    "linear_params": c.linear_params,
                    "factorized": len(c.plan),
                    "calibration_loss": None if math.isnan(c.calibration_loss) else c.calibration_loss,
                    "chosen": i == self.chosen,
                }
                for i, c in enumerate(self.candidates)
            ],
        }


def plan_linear_params(matrices: list[WeightMatrix], plan: RankPlan) -> int:
    """The linear layers' parameters a plan keeps: r·(m+n) per planned matrix, m·n for the rest."""
    total = 0
    for m in matrices:
        rank = plan.get(m.name)
        total += m.params if rank is None else rank * sum(m.shape)
    return total
