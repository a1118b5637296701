"""Presets: ways to set every matrix's rank at once, each with the range of its one setting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowrank_lab.checks import is_fraction, is_positive_int
from lowrank_lab.errors import InvalidRankPlan
from lowrank_lab.plan.rank_plan import RankPlan, factorizes
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.metrics import energy_rank


def _targets(spectra: list[LayerSpectrum], include_embeddings: bool) -> list[LayerSpectrum]:
    return [sp for sp in spectra if include_embeddings or not sp.is_embedding]


def plan_keep_params(spectra: list[LayerSpectrum], fraction: float, include_embeddings: bool = False) -> RankPlan:
    """Every matrix keeps about ``fraction`` of its parameters: r = ⌊fraction·m·n/(m+n)⌋ (at least 1).

    Raises:
        InvalidRankPlan: ``fraction`` is outside (0, 1].
    """
    _check_fraction(fraction, "fraction of parameters to keep")
    ranks = {}
    for sp in _targets(spectra, include_embeddings):
        m, n = sp.shape
        r = max(1, int(fraction * m * n / (m + n)))
        if factorizes(r, sp.shape):
            ranks[sp.name] = r
    return RankPlan(ranks)


def plan_keep_energy(spectra: list[LayerSpectrum], fraction: float, include_embeddings: bool = False) -> RankPlan:
    """Every matrix keeps the smallest rank holding ``fraction`` of its energy Σσᵢ².

    Raises:
        InvalidRankPlan: ``fraction`` is outside (0, 1].
    """
    _check_fraction(fraction, "fraction of energy to keep")
    ranks = {}
    for sp in _targets(spectra, include_embeddings):
        r = max(1, energy_rank(sp.s, fraction))
        if factorizes(r, sp.shape):
            ranks[sp.name] = r
    return RankPlan(ranks)


def plan_fixed_rank(spectra: list[LayerSpectrum], rank: int, include_embeddings: bool = False) -> RankPlan:
    """Every matrix gets rank ``min(rank, full rank)``; those at or past break-even stay dense.

    Raises:
        InvalidRankPlan: ``rank`` is not a positive integer.
    """
    if not is_positive_int(rank):
        raise InvalidRankPlan(f"a fixed rank must be a positive integer, got {rank!r}")
    return RankPlan(
        {
            sp.name: min(rank, sp.full_rank)
            for sp in _targets(spectra, include_embeddings)
            if factorizes(min(rank, sp.full_rank), sp.shape)
        }
    )


def _check_fraction(value: float, what: str) -> None:
    if not is_fraction(value):
        raise InvalidRankPlan(f"the {what} must be in (0, 1], got {value!r}")


def plan_energy_per_param(spectra: list[LayerSpectrum], threshold: float) -> RankPlan:
    """Keep every singular direction whose energy per parameter σᵢ²/(m+n) is ≥ ``threshold``.

    This spends a parameter budget greedily where it keeps the most energy, so it loses about
    the least total energy (the weighted error) for its size; it is exact up to the break-even
    rule, which leaves a matrix dense rather than factorized past break-even.
    """
    ranks = {}
    for sp in spectra:
        if sp.is_embedding:
            continue
        m, n = sp.shape
        # At least rank 1: a matrix cannot be dropped altogether.
        r = max(1, int(np.sum(np.square(sp.s) / (m + n) >= threshold)))
        if factorizes(r, sp.shape):
            ranks[sp.name] = r
    return RankPlan(ranks)


@dataclass(frozen=True)
class Preset:
    """A way to set every linear matrix at once, with the range of its one setting.

    Attributes:
        key: a short stable name (``keep-params``).
        label: what a person reads.
        minimum, maximum, default, step: the setting's range and default.
        build: ``build(spectra, value) -> RankPlan``.
        integer: the setting is an integer (a rank) rather than a fraction.
    """

    key: str
    label: str
    minimum: float
    maximum: float
    default: float
    step: float
    build: Callable[[list[LayerSpectrum], float], RankPlan]
    integer: bool = False

    def plan(self, spectra: list[LayerSpectrum], value: float) -> RankPlan:
        """The preset's plan for ``value``.

        Raises:
            InvalidRankPlan: ``value`` is outside the preset's range.
        """
        if not self.minimum <= value <= self.maximum:
            raise InvalidRankPlan(f"{self.label} must be in {self.minimum}..{self.maximum}, got {value!r}")
        return self.build(spectra, int(value) if self.integer else float(value))


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset("keep-params", "Keep this fraction of each matrix's parameters", 0.01, 1.0, 0.5, 0.01, plan_keep_params),
        Preset(
            "keep-energy", "Keep this fraction of each matrix's energy Σσᵢ²", 0.5, 1.0, 0.9, 0.005, plan_keep_energy
        ),
        Preset("fixed-rank", "The same rank for every matrix", 1, 4096, 64, 1, plan_fixed_rank, integer=True),
    )
}
