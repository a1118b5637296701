"""What one compression run returns: the model, the plan, what each stage bought, why these ranks.

One frozen object serves the command line (its JSON), the app (its results panel), the run
store and the benchmark, so none of them rebuilds the sequence allocate → compress → compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lowrank_lab.comparison import Comparison
from lowrank_lab.compress.distill import DistillReport
from lowrank_lab.errors import SettingsError
from lowrank_lab.matrices import WeightMatrix
from lowrank_lab.models import CompressedModel, ParamCounts
from lowrank_lab.plan import RankPlan

# The stages of the gap waterfall, in order: each adds one thing to the one before.
STAGE_UNIFORM = "whitened, uniform ranks"
STAGE_ALLOCATION = "allocated ranks"
STAGE_SEQUENTIAL = "sequential inputs"
STAGE_REFIT = "refit to the dense outputs"
STAGE_DISTILLED = "distilled end to end"
STAGE_HEALED = "healed (LoRA)"
STAGES = (STAGE_UNIFORM, STAGE_ALLOCATION, STAGE_SEQUENTIAL, STAGE_REFIT, STAGE_DISTILLED, STAGE_HEALED)


@dataclass(frozen=True)
class StageFigure:
    """Perplexity after one stage.

    Attributes:
        stage: one of :data:`STAGES`.
        perplexity: on the evaluation text.
        description: what the model at this stage is, in words.
    """

    stage: str
    perplexity: float
    description: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise SettingsError(f"unknown stage {self.stage!r}; stages are {', '.join(STAGES)}")
        if not (isinstance(self.perplexity, (int, float)) and self.perplexity > 0):
            raise SettingsError(f"a perplexity must be a positive number, got {self.perplexity!r}")


@dataclass(frozen=True)
class StageReport:
    """The gap waterfall: dense perplexity, then perplexity after each stage, on one evaluation text.

    Attributes:
        dense_perplexity: the dense model's.
        stages: in order; later stages include everything earlier ones did.
        eval_source: the evaluation text's name.
        eval_tokens: tokens scored.
    """

    dense_perplexity: float
    stages: tuple[StageFigure, ...]
    eval_source: str
    eval_tokens: int

    def ratio(self, figure: StageFigure) -> float:
        """A stage's perplexity over the dense model's."""
        return figure.perplexity / self.dense_perplexity

    def gap_closed(self, figure: StageFigure) -> float | None:
        """The share of the first stage's gap to dense that this stage has closed (None: no gap)."""
        if not self.stages or self.stages[0].perplexity <= self.dense_perplexity:
            return None
        first = self.stages[0].perplexity - self.dense_perplexity
        return (self.stages[0].perplexity - figure.perplexity) / first

    def to_dict(self) -> dict:
        return {
            "dense_perplexity": self.dense_perplexity,
            "eval_text": self.eval_source,
            "eval_tokens": self.eval_tokens,
            "stages": [
                {
                    "stage": f.stage,
                    "perplexity": f.perplexity,
                    "ratio": self.ratio(f),
                    "description": f.description,
                }
                for f in self.stages
            ],
        }


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
    """The linear layers' parameters a plan keeps: r·(m+n) per planned matrix below break-even, m·n for the rest."""
    total = 0
    for m in matrices:
        rank = plan.get(m.name)
        total += m.params if rank is None else min(m.params, rank * sum(m.shape))
    return total


@dataclass(frozen=True)
class CompressionResult:
    """Everything one compression run produced.

    Attributes:
        compressed: the compressed model (None when it was written to a folder block by block
            and never held in memory).
        plan: the ranks factorized.
        allocation: how the ranks were chosen.
        stages: the gap waterfall, when it was measured.
        comparison: dense against compressed, when it was measured.
        params: parameter counts before and after (whole model, linear layers).
        out: the checkpoint folder written, if any.
        seconds: wall time per step (``dense``, ``allocate``, ``compress``, ``distill``, ``stages``,
            ``evaluate``, ``write``).
        distillation: what the end-to-end distillation did, when it ran.
    """

    compressed: CompressedModel | None
    plan: RankPlan
    allocation: AllocationReport
    stages: StageReport | None = None
    comparison: Comparison | None = None
    params: ParamCounts | None = None
    out: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    distillation: DistillReport | None = None
