"""What a rank plan costs and saves, from cached singular values alone (Eckart–Young).

By Eckart–Young the best rank-r approximation of W has error ‖W − W_r‖_F = sqrt(Σ_{i>r} σᵢ²)
and ‖W − W_r‖₂ = σ_{r+1}, so a summary needs no SVD on a slider move.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lowrank_lab.checks import require
from lowrank_lab.plan.rank_plan import RankPlan, factorizes
from lowrank_lab.spectra.engine import LayerSpectrum


@dataclass(frozen=True)
class MatrixCost:
    """What the plan does to one matrix.

    Attributes:
        rank: the rank kept if factorized, else the full rank.
        factorized: False when the plan leaves it dense (absent or at/past break-even).
        params_dense: m·n.  params_kept: r·(m+n) if factorized, else m·n.
        rel_frobenius_error: ‖W − W_r‖_F / ‖W‖_F (0 if dense).
        spectral_error: σ_{r+1} / σ₁ (0 if dense).
    """

    name: str
    kind: str
    layer: int | None
    shape: tuple[int, int]
    is_embedding: bool
    rank: int
    factorized: bool
    params_dense: int
    params_kept: int
    rel_frobenius_error: float
    spectral_error: float


def energy_table(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sums every Eckart–Young error reads, for singular values ``s`` (k,), descending.

    Returns:
        (energy, s_next), each (k + 1,): energy[r] = Σ_{i≤r} σᵢ² with energy[0] = 0, so
        ‖W − W_r‖_F² = energy[k] − energy[r]; s_next[r] = σ_{r+1} (0 past the end), so
        ‖W − W_r‖₂ = s_next[r].
    """
    return np.concatenate([[0.0], np.cumsum(np.square(s))]), np.concatenate([s, [0.0]])


def rank_errors(sp: LayerSpectrum, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative Frobenius and spectral error of the best rank-r approximations (Eckart–Young).

    Args:
        sp: a matrix's spectrum.
        ranks: integer ranks, any shape, each in 0..full_rank.

    Returns:
        (relative Frobenius error, σ_{r+1}/σ₁), each the shape of ``ranks``.
    """
    ranks = np.asarray(ranks)
    energy, s_next = energy_table(sp.s)
    total = energy[-1]
    if total == 0:
        zero = np.zeros(ranks.shape)
        return zero, zero
    fro = np.sqrt(np.clip(total - energy[ranks], 0.0, None) / total)
    return fro, s_next[ranks] / sp.s[0]


@dataclass(frozen=True, eq=False)
class PlanSummary:
    """The plan's cost and savings over the analysed matrices and the whole model.

    Savings are given two ways: as a fraction of the linear layers' parameters (the analysed
    matrices that are not embeddings) and as a fraction of all the model's parameters.
    """

    rows: tuple[MatrixCost, ...]
    model_params: int
    weighted_error: float
    """sqrt(Σ lost energy / Σ energy) over the linear (non-embedding) matrices: the relative
    Frobenius error of all of them stacked together."""

    @cached_property
    def linear_params_dense(self) -> int:
        return sum(r.params_dense for r in self.rows if not r.is_embedding)

    @cached_property
    def params_saved(self) -> int:
        return sum(r.params_dense - r.params_kept for r in self.rows)

    @property
    def linear_params_kept(self) -> int:
        return self.linear_params_dense - sum(r.params_dense - r.params_kept for r in self.rows if not r.is_embedding)

    @property
    def model_params_kept(self) -> int:
        return self.model_params - self.params_saved

    @property
    def saved_fraction_of_linear(self) -> float:
        saved = self.linear_params_dense - self.linear_params_kept
        return saved / self.linear_params_dense if self.linear_params_dense else 0.0

    @property
    def saved_fraction_of_model(self) -> float:
        return self.params_saved / self.model_params if self.model_params else 0.0

    @property
    def n_factorized(self) -> int:
        return sum(r.factorized for r in self.rows)

    def model_bytes(self, bytes_per_param: int) -> int:
        """Size of all parameters after the plan at ``bytes_per_param`` (4 fp32, 2 fp16/bf16)."""
        return self.model_params_kept * bytes_per_param

    def row(self, name: str) -> MatrixCost:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


class PlanCalculator:
    """Summaries of many plans over the same spectra (what a slider move needs).

    Each matrix's cumulative energy Σ_{i≤r} σᵢ² is summed once, at construction, so a summary
    is a few lookups per matrix.
    """

    def __init__(self, spectra: list[LayerSpectrum]):
        require(spectra, (list, tuple), "the spectra", "compute them with compute_spectra")
        self.spectra = spectra
        self._tables = [energy_table(sp.s) for sp in spectra]

    def summarize(self, plan: RankPlan, model_params: int | None = None) -> PlanSummary:
        """The plan's cost and savings; see :func:`summarize_plan`."""
        require(plan, RankPlan, "the plan", "build one with RankPlan({name: rank})")
        ranks = plan.as_dict()
        rows = []
        lost = total = 0.0
        for sp, (energy, s_next) in zip(self.spectra, self._tables):
            r = ranks.get(sp.name)
            m, n = sp.shape
            if r is not None and factorizes(r, sp.shape):
                r = min(r, sp.full_rank)
                whole = energy[-1]
                fro = float(np.sqrt(max(whole - energy[r], 0.0) / whole)) if whole else 0.0
                spec = float(s_next[r] / sp.s[0]) if whole else 0.0
                kept, factorized = r * (m + n), True
            else:
                fro = spec = 0.0
                kept, factorized, r = m * n, False, sp.full_rank
            if not sp.is_embedding:
                e = sp.metrics.frobenius**2
                total += e
                lost += e * fro**2
            rows.append(
                MatrixCost(sp.name, sp.kind, sp.layer, sp.shape, sp.is_embedding, r, factorized, m * n, kept, fro, spec)
            )
        if model_params is None:
            model_params = sum(row.params_dense for row in rows)
        return PlanSummary(tuple(rows), model_params, (lost / total) ** 0.5 if total else 0.0)


def summarize_plan(spectra: list[LayerSpectrum], plan: RankPlan, model_params: int | None = None) -> PlanSummary:
    """Cost and savings of ``plan`` from the cached singular values alone (no SVD).

    For many plans over the same spectra (a slider), keep one :class:`PlanCalculator`.

    Args:
        spectra: the model's spectra (embeddings may be among them).
        plan: a validated plan; names missing from ``spectra`` are ignored.
        model_params: all parameters of the model; defaults to the analysed matrices' total.

    Returns:
        A :class:`PlanSummary` with one :class:`MatrixCost` per spectrum.
    """
    return PlanCalculator(spectra).summarize(plan, model_params)
