"""How many singular directions of each ΔW an extracted LoRA keeps: the settings and the plan.

A model's change is a list of ΔW spectra (:func:`~lowrank_lab.spectra.delta.model_delta`), so
the Ranks page's machinery plans it unchanged: a :class:`~lowrank_lab.plan.RankPlan` of module
→ LoRA rank, from the same presets (a fixed rank, or the smallest rank keeping a fraction of
each ΔW's energy), or under a parameter budget spent where each parameter keeps the most
energy. A matrix the plan leaves out — its rank at or past break-even, where two factors are no
smaller than the matrix — is carried whole (PEFT's ``modules_to_save``), exactly, as "dense"
means on the Ranks page. The extraction error of a plan comes from the cached σ alone
(Eckart–Young), as a slider moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lowrank_lab.checks import is_fraction, is_positive_int
from lowrank_lab.errors import SettingsError
from lowrank_lab.plan import (
    PlanCalculator,
    PlanSummary,
    RankPlan,
    plan_energy_per_param,
    plan_fixed_rank,
    plan_keep_energy,
)
from lowrank_lab.spectra.engine import LayerSpectrum

Mode = Literal["rank", "energy", "budget"]
MODES: dict[str, str] = {
    "energy": "smallest rank keeping this fraction of each ΔW's energy Σσᵢ²",
    "rank": "the same LoRA rank for every changed matrix",
    "budget": "best ranks for a parameter budget (fraction of the changed matrices' parameters)",
}


@dataclass(frozen=True)
class ExtractionSettings:
    """How to choose each changed matrix's LoRA rank.

    Attributes:
        mode: ``energy`` (smallest rank keeping ``value`` of each ΔW's Σσᵢ², like mergekit's
            ``--sv-epsilon``), ``rank`` (the integer ``value`` everywhere, like ``--max-rank``) or
            ``budget`` (the adapter holds at most ``value`` of the changed matrices' parameters,
            ranks placed where a parameter keeps the most energy).
        value: the fraction in (0, 1], or the rank (a positive integer).

    Raises:
        SettingsError: an unknown mode, a fraction outside (0, 1], a rank that is not a
            positive integer.
    """

    mode: Mode = "energy"
    value: float = 0.99

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"unknown extraction mode {self.mode!r}; use one of {', '.join(MODES)}")
        v = self.value
        if self.mode == "rank":
            # A whole float (16.0, as a number box or argparse gives it) is that integer.
            whole = isinstance(v, (float, np.floating)) and float(v).is_integer()
            if not (is_positive_int(v) or (whole and v >= 1)):
                raise SettingsError(f"a LoRA rank must be a positive integer, got {v!r}; e.g. 16")
            object.__setattr__(self, "value", int(v))
            return
        what = "energy fraction to keep" if self.mode == "energy" else "parameter budget"
        if not is_fraction(v):  # NaN and inf fail it too
            raise SettingsError(
                f"the {what} must be a fraction in (0, 1], got {v!r}; e.g. "
                + ("0.99 keeps 99% of each change's energy" if self.mode == "energy" else "0.1 for 10%")
            )
        object.__setattr__(self, "value", float(v))

    def describe(self) -> str:
        if self.mode == "rank":
            return f"rank {self.value}"
        if self.mode == "energy":
            return f"{self.value:g} of each ΔW's energy"
        return f"budget {self.value:g} of the changed matrices' parameters"


def _linear(spectra: list[LayerSpectrum]) -> list[LayerSpectrum]:
    return [sp for sp in spectra if not sp.is_embedding and sp.metrics.frobenius > 0]


def plan_budget(spectra: list[LayerSpectrum], fraction: float) -> RankPlan:
    """The plan keeping the most ΔW energy whose parameters fit ``fraction`` of the matrices'.

    Every singular direction is priced by its energy per parameter σᵢ²/(m+n); a threshold on
    that price, bisected, picks the plan (matrices past break-even count whole, as they are
    carried whole).

    Raises:
        SettingsError: ``fraction`` outside (0, 1], or below what rank 1 everywhere needs.
    """
    ExtractionSettings("budget", fraction)  # validates
    linear = _linear(spectra)
    if not linear:
        return RankPlan()
    calc = PlanCalculator(linear)
    dense = sum(sp.params for sp in linear)
    allowed = fraction * dense

    def kept(plan: RankPlan) -> int:
        return calc.summarize(plan).linear_params_kept

    smallest = RankPlan({sp.name: 1 for sp in linear if 1 * sum(sp.shape) < sp.params})
    if kept(smallest) > allowed:
        raise SettingsError(
            f"a budget of {fraction:g} ({int(allowed):,} parameters) is below what rank 1 for every changed "
            f"matrix needs ({kept(smallest):,}, {kept(smallest) / dense:.4f} of {dense:,}); raise the budget"
        )
    prices = np.concatenate([np.square(sp.s) / sum(sp.shape) for sp in linear])
    prices = np.unique(prices[prices > 0])[::-1]  # descending: a lower threshold keeps more
    lo, hi = 0, len(prices) - 1  # invariant: prices[lo] fits (or lo is the smallest plan)
    best = plan_energy_per_param(linear, float(prices[0]))
    if kept(best) > allowed:
        return smallest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        plan = plan_energy_per_param(linear, float(prices[mid]))
        if kept(plan) <= allowed:
            lo, best = mid, plan
        else:
            hi = mid - 1
    return best


def extraction_plan(spectra: list[LayerSpectrum], settings: ExtractionSettings) -> RankPlan:
    """Module → LoRA rank for the changed linear matrices under ``settings``.

    Args:
        spectra: ΔW spectra (unchanged matrices and embeddings are left out of the plan).
        settings: how to choose the ranks.

    Returns:
        The plan; a changed matrix absent from it is carried whole.
    """
    linear = _linear(spectra)
    if settings.mode == "rank":
        return plan_fixed_rank(linear, int(settings.value))
    if settings.mode == "energy":
        return plan_keep_energy(linear, float(settings.value))
    return plan_budget(linear, float(settings.value))


@dataclass(frozen=True)
class ExtractionEstimate:
    """What a plan's adapter holds and loses, from the ΔW singular values alone.

    Attributes:
        lora_modules: matrices stored as LoRA factors.  dense_modules: changed matrices carried whole.
        lora_params: Σ r·(m+n).  dense_params: Σ m·n of those carried whole.
        changed_params: Σ m·n of every changed linear matrix (what "the change" spans).
        energy_kept: Σ kept σᵢ² / Σ σᵢ² over the changed linear matrices.
        relative_error: ‖ΔW − B·A‖_F / ‖ΔW‖_F, all those matrices stacked = sqrt(1 − energy_kept).
    """

    lora_modules: int
    dense_modules: int
    lora_params: int
    dense_params: int
    changed_params: int
    energy_kept: float
    relative_error: float

    @property
    def adapter_params(self) -> int:
        return self.lora_params + self.dense_params

    @property
    def params_fraction(self) -> float:
        return self.adapter_params / self.changed_params if self.changed_params else 0.0


def estimate(summary: PlanSummary) -> ExtractionEstimate:
    """Read an :class:`ExtractionEstimate` off a :class:`PlanSummary` of the ΔW spectra."""
    rows = [r for r in summary.rows if not r.is_embedding]
    lora = [r for r in rows if r.factorized]
    dense = [r for r in rows if not r.factorized]
    err = summary.weighted_error
    return ExtractionEstimate(
        lora_modules=len(lora),
        dense_modules=len(dense),
        lora_params=sum(r.params_kept for r in lora),
        dense_params=sum(r.params_dense for r in dense),
        changed_params=sum(r.params_dense for r in rows),
        energy_kept=1.0 - err**2,
        relative_error=err,
    )


def estimate_plan(spectra: list[LayerSpectrum], plan: RankPlan) -> ExtractionEstimate:
    """:func:`estimate` of ``plan`` over the changed linear matrices of ``spectra``."""
    return estimate(PlanCalculator(_linear(spectra)).summarize(plan))
