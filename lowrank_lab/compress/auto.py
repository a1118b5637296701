"""Automatic rank allocation (placeholder until the measured allocator lands)."""

from __future__ import annotations

from lowrank_lab.compress.calibration import CalibrationSettings
from lowrank_lab.compress.methods import linear_matrices
from lowrank_lab.models import LoadedModel
from lowrank_lab.plan import RankPlan, plan_keep_params
from lowrank_lab.progress import ProgressFn


def auto_plan(
    loaded: LoadedModel, keep: float, method: str, settings: CalibrationSettings, progress: ProgressFn | None = None
) -> RankPlan:
    """For now the uniform plan."""
    return plan_keep_params(linear_matrices(loaded), keep)
