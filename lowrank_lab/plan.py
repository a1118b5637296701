"""Rank plans and what they cost and save, from cached singular values alone.

A :class:`RankPlan` maps module names (exactly as ``model.named_modules()`` gives them, so a
plan maps onto PEFT's ``rank_pattern``) to ranks. A module left out of the plan stays dense,
and so does one whose rank is at or past the break-even rank, where two thin factors
(r·(m+n) parameters) would be no smaller than the dense matrix (m·n).

By Eckart–Young the best rank-r approximation of W has error ‖W − W_r‖_F = sqrt(Σ_{i>r} σᵢ²)
and ‖W − W_r‖₂ = σ_{r+1}, so a summary needs no SVD on a slider move.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lowrank_lab.errors import InvalidRankPlan
from lowrank_lab.spectra.engine import LayerSpectrum
from lowrank_lab.spectra.metrics import energy_rank

PLAN_FORMAT = "lowrank_lab.rank_plan"


def factorizes(rank: int, shape: tuple[int, int]) -> bool:
    """True when rank-r factors (r·(m+n) parameters) are smaller than the dense m×n matrix."""
    m, n = shape
    return rank * (m + n) < m * n


def break_even_rank(shape: tuple[int, int]) -> int:
    """The smallest rank at which factoring saves nothing: r·(m+n) ≥ m·n."""
    m, n = shape
    return math.ceil(m * n / (m + n))


@dataclass(frozen=True)
class RankPlan:
    """Module name → rank. Hashable; build it from any mapping: ``RankPlan({"q_proj": 8})``.

    Raises:
        InvalidRankPlan: a name is not a string or a rank is not a positive integer.
    """

    ranks: tuple[tuple[str, int], ...] = ()

    def __init__(self, ranks: Mapping[str, int] | Iterable[tuple[str, int]] = ()):
        if isinstance(ranks, RankPlan):
            ranks = ranks.ranks
        if isinstance(ranks, (str, bytes)) or not isinstance(ranks, (Mapping, Iterable)):
            raise InvalidRankPlan(
                f"a rank plan is built from a mapping of module name → rank, got {type(ranks).__name__}; "
                'e.g. RankPlan({"model.layers.0.mlp.up_proj": 64})'
            )
        items = list(ranks.items() if isinstance(ranks, Mapping) else ranks)
        if not all(isinstance(item, tuple | list) and len(item) == 2 for item in items):
            raise InvalidRankPlan("a rank plan is built from (module name, rank) pairs or a mapping of them")
        clean = []
        for name, rank in items:
            if not isinstance(name, str) or not name:
                raise InvalidRankPlan(f"module names must be non-empty strings, got {name!r}")
            if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0:
                raise InvalidRankPlan(f"the rank of {name!r} must be a positive integer, got {rank!r}")
            clean.append((name, int(rank)))
        object.__setattr__(self, "ranks", tuple(sorted(clean)))

    def as_dict(self) -> dict[str, int]:
        return dict(self.ranks)

    def __len__(self) -> int:
        return len(self.ranks)

    def get(self, name: str, default: int | None = None) -> int | None:
        return self.as_dict().get(name, default)

    def with_rank(self, name: str, rank: int | None) -> RankPlan:
        """A copy with one module's rank set (None removes it: dense)."""
        d = self.as_dict()
        if rank is None:
            d.pop(name, None)
        else:
            d[name] = rank
        return RankPlan(d)

    def validate(self, spectra_or_matrices: Iterable, model=None) -> None:
        """Check every name exists in the model and every rank is within 1..full rank.

        Args:
            spectra_or_matrices: the model's :class:`LayerSpectrum` or ``WeightMatrix`` list.
            model: the model itself, if at hand: a name it has that is no factorizable matrix
                (a norm, a head tied to the embedding) is then named as such.

        Raises:
            InvalidRankPlan: naming the unknown modules or the out-of-range ranks.
        """
        listed = list(spectra_or_matrices)
        shapes = {m.name: m.shape for m in listed}
        for m in listed:
            for tied in getattr(m, "tied_to", ()):
                if self.get(tied) is not None:
                    raise InvalidRankPlan(
                        f"the plan names {tied}, which shares its weight with {m.name} (tied); a tied weight "
                        f"cannot be factorized on one side only. Remove {tied} from the plan"
                    )
        unknown = [n for n, _ in self.ranks if n not in shapes]
        if unknown and model is not None:
            _explain_not_a_matrix(unknown, model)
        if unknown:
            examples = ", ".join(list(shapes)[:3])
            raise InvalidRankPlan(
                f"the plan names {len(unknown)} module(s) this model does not have: "
                f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}. "
                f"Use module names as model.named_modules() gives them, e.g. {examples}"
            )
        bad = [(n, r, min(shapes[n])) for n, r in self.ranks if r > min(shapes[n])]
        if bad:
            n, r, full = bad[0]
            raise InvalidRankPlan(
                f"rank {r} for {n} is above its full rank {full}; "
                f"{len(bad)} module(s) have a rank out of range 1..full rank"
            )

    def to_json(self, model: str | None = None) -> str:
        """The plan as JSON: ``{"format", "version", "model", "ranks": {name: rank}}``."""
        return json.dumps({"format": PLAN_FORMAT, "version": 1, "model": model, "ranks": self.as_dict()}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> RankPlan:
        """Read a plan written by :meth:`to_json`, or a bare ``{name: rank}`` object.

        Raises:
            InvalidRankPlan: the text is not JSON, not an object, or holds bad entries.
        """
        if isinstance(text, bytearray | memoryview):
            text = bytes(text)
        if not isinstance(text, (str, bytes)):
            raise InvalidRankPlan(f"a rank plan is read from JSON text or bytes, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidRankPlan(
                f"the rank plan is not valid JSON ({err}); upload a file saved by lowrank_lab"
            ) from None
        except RecursionError:
            raise InvalidRankPlan(
                'the rank plan is nested too deeply to read; a plan is one flat object {"module name": rank}'
            ) from None
        except ValueError as err:  # e.g. an integer with thousands of digits
            raise InvalidRankPlan(f"the rank plan cannot be read ({err}); ranks are small positive integers") from None
        if isinstance(data, dict) and "ranks" in data:
            if data.get("format", PLAN_FORMAT) != PLAN_FORMAT:
                raise InvalidRankPlan(f"the file's format is {data.get('format')!r}, not a lowrank_lab rank plan")
            data = data["ranks"]
        if not isinstance(data, dict):
            raise InvalidRankPlan(
                'a rank plan is a JSON object of module name → rank, e.g. {"model.layers.0.mlp.up_proj": 64}'
            )
        return cls(data)


def _explain_not_a_matrix(names: list[str], model) -> None:
    """Raise a clear InvalidRankPlan for a planned name the model has that is no factorizable matrix."""
    modules = dict(model.named_modules())
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if module is head and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0):
            raise InvalidRankPlan(
                f"{name} is the output head, and it shares its weight with the input embedding (tied), so it "
                "cannot be factorized on its own; remove it from the plan"
            )
        weight = getattr(module, "weight", None)
        shape = "no weight" if weight is None else f"a weight of shape {list(weight.shape)}"
        raise InvalidRankPlan(
            f"{name} is a {type(module).__name__} ({shape}), not a Linear layer with a weight matrix, so it cannot "
            "be factorized; plan only Linear layers such as those model.named_modules() lists as Linear"
        )


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


def rank_errors(sp: LayerSpectrum, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative Frobenius and spectral error of the best rank-r approximations (Eckart–Young).

    Args:
        sp: a matrix's spectrum.
        ranks: integer ranks, any shape, each in 0..full_rank.

    Returns:
        (relative Frobenius error, σ_{r+1}/σ₁), each the shape of ``ranks``.
    """
    ranks = np.asarray(ranks)
    energy = np.concatenate([[0.0], np.cumsum(np.square(sp.s))])
    total = energy[-1]
    if total == 0:
        zero = np.zeros(ranks.shape)
        return zero, zero
    fro = np.sqrt(np.clip(total - energy[ranks], 0.0, None) / total)
    s_next = np.concatenate([sp.s, [0.0]])[ranks]
    return fro, s_next / sp.s[0]


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
        self.spectra = spectra
        # energy[k] = Σ_{i≤k} σᵢ², with energy[0] = 0; s_next[r] = σ_{r+1} (0 past the end).
        self._energy = [np.concatenate([[0.0], np.cumsum(np.square(sp.s))]) for sp in spectra]
        self._s_next = [np.concatenate([sp.s, [0.0]]) for sp in spectra]

    def summarize(self, plan: RankPlan, model_params: int | None = None) -> PlanSummary:
        """The plan's cost and savings; see :func:`summarize_plan`."""
        ranks = plan.as_dict()
        rows = []
        lost = total = 0.0
        for sp, energy, s_next in zip(self.spectra, self._energy, self._s_next):
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
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise InvalidRankPlan(f"a fixed rank must be a positive integer, got {rank!r}")
    return RankPlan(
        {
            sp.name: min(rank, sp.full_rank)
            for sp in _targets(spectra, include_embeddings)
            if factorizes(min(rank, sp.full_rank), sp.shape)
        }
    )


def _check_fraction(value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidRankPlan(f"the {what} must be in (0, 1], got {value!r}")
