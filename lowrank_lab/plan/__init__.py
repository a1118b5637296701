"""Rank plans: the plan and its summaries (Eckart–Young), presets, per-kind controls, trade-off curves.

Everything follows from cached singular values; no SVD runs here. The words a page shows
about them live in :mod:`lowrank_lab.ui`.
"""

from lowrank_lab.plan.controls import (
    KindInfo,
    RankControls,
    controls_from_plan,
    linear_kinds,
    plan_from_controls,
    read_plan,
)
from lowrank_lab.plan.curves import (
    ErrorCurve,
    KindTotals,
    TradeoffCurve,
    error_curve,
    kind_totals,
    plan_point,
    tradeoff_curves,
)
from lowrank_lab.plan.presets import (
    PRESETS,
    Preset,
    plan_energy_per_param,
    plan_fixed_rank,
    plan_keep_energy,
    plan_keep_params,
)
from lowrank_lab.plan.rank_plan import PLAN_FORMAT, RankPlan, break_even_rank, factorizes
from lowrank_lab.plan.summary import MatrixCost, PlanCalculator, PlanSummary, energy_table, rank_errors, summarize_plan

__all__ = [
    "PLAN_FORMAT",
    "PRESETS",
    "ErrorCurve",
    "KindInfo",
    "KindTotals",
    "MatrixCost",
    "PlanCalculator",
    "PlanSummary",
    "Preset",
    "RankControls",
    "RankPlan",
    "TradeoffCurve",
    "break_even_rank",
    "controls_from_plan",
    "energy_table",
    "error_curve",
    "factorizes",
    "kind_totals",
    "linear_kinds",
    "plan_energy_per_param",
    "plan_fixed_rank",
    "plan_from_controls",
    "plan_keep_energy",
    "plan_keep_params",
    "plan_point",
    "rank_errors",
    "read_plan",
    "summarize_plan",
    "tradeoff_curves",
]
