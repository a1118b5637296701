"""Rank controls: one rank per matrix kind and per-matrix overrides, to a RankPlan and back.

The Ranks page sets ranks at three levels: a rank per matrix kind (``self_attn.q_proj`` in
every layer), an override for single matrices, and presets (:mod:`lowrank_lab.plan.presets`)
that set every matrix at once. This module turns the first two into a
:class:`~lowrank_lab.plan.RankPlan` and a plan back into them (so a preset or an uploaded plan
shows on the sliders), with no UI in it.

Conventions: a rank is clipped to each matrix's full rank, and a rank at or past a matrix's
break-even rank (r·(m+n) ≥ m·n) means "keep dense", so the full rank is a safe way to say
"dense". Kind ranks apply to linear (non-embedding) matrices only; overrides apply to any
analysed matrix, embeddings included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lowrank_lab.checks import is_positive_int
from lowrank_lab.errors import InvalidRankPlan
from lowrank_lab.plan.rank_plan import RankPlan, break_even_rank, factorizes
from lowrank_lab.spectra.engine import LayerSpectrum


@dataclass(frozen=True)
class KindInfo:
    """The linear matrices of one kind across layers.

    Attributes:
        kind: e.g. ``self_attn.q_proj`` (the module name without its layer prefix).
        names: the module names of every matrix of this kind, in model order.
        full_rank: the largest full rank among them (a kind slider's maximum).
        break_even: the rank from which every matrix of the kind stays dense.
    """

    kind: str
    names: tuple[str, ...]
    full_rank: int
    break_even: int


def linear_kinds(spectra: Iterable[LayerSpectrum]) -> list[KindInfo]:
    """The kinds of the linear (non-embedding) matrices, in the order they first appear."""
    groups: dict[str, list[LayerSpectrum]] = {}
    for sp in spectra:
        if not sp.is_embedding:
            groups.setdefault(sp.kind, []).append(sp)
    return [
        KindInfo(
            kind=kind,
            names=tuple(sp.name for sp in group),
            full_rank=max(sp.full_rank for sp in group),
            break_even=max(break_even_rank(sp.shape) for sp in group),
        )
        for kind, group in groups.items()
    ]


def _positive_ranks(items: Mapping[str, int] | Iterable[tuple[str, int]], what: str) -> tuple[tuple[str, int], ...]:
    pairs = items.items() if isinstance(items, Mapping) else items
    clean = {}
    for key, rank in pairs:
        if not is_positive_int(rank):
            raise InvalidRankPlan(f"the {what} rank of {key!r} must be a positive integer, got {rank!r}")
        clean[str(key)] = int(rank)
    return tuple(sorted(clean.items()))


@dataclass(frozen=True)
class RankControls:
    """What the rank controls say: a rank per kind and per-matrix overrides. Hashable.

    Attributes:
        kind_ranks: kind → rank for every layer's matrix of that kind (absent: dense).
        overrides: module name → rank, taking precedence over the kind's rank.

    Raises:
        InvalidRankPlan: a rank is not a positive integer.
    """

    kind_ranks: tuple[tuple[str, int], ...] = ()
    overrides: tuple[tuple[str, int], ...] = ()

    def __init__(
        self,
        kind_ranks: Mapping[str, int] | Iterable[tuple[str, int]] = (),
        overrides: Mapping[str, int] | Iterable[tuple[str, int]] = (),
    ):
        object.__setattr__(self, "kind_ranks", _positive_ranks(kind_ranks, "kind"))
        object.__setattr__(self, "overrides", _positive_ranks(overrides, "override"))

    def kind_rank(self, kind: str) -> int | None:
        return dict(self.kind_ranks).get(kind)

    def override(self, name: str) -> int | None:
        return dict(self.overrides).get(name)

    def with_kind_rank(self, kind: str, rank: int) -> RankControls:
        """A copy with one kind's rank set (overrides stay)."""
        return RankControls({**dict(self.kind_ranks), kind: rank}, self.overrides)

    def with_override(self, name: str, rank: int | None) -> RankControls:
        """A copy with one matrix's override set, or removed when ``rank`` is None."""
        overrides = dict(self.overrides)
        if rank is None:
            overrides.pop(name, None)
        else:
            overrides[name] = rank
        return RankControls(self.kind_ranks, overrides)

    def without_overrides(self) -> RankControls:
        return RankControls(self.kind_ranks, ())


def _kept_rank(rank: int | None, sp: LayerSpectrum) -> int | None:
    """The rank a matrix is factorized at for a requested rank, or None when it stays dense."""
    if rank is None:
        return None
    rank = min(rank, sp.full_rank)
    return rank if factorizes(rank, sp.shape) else None


def plan_from_controls(spectra: Iterable[LayerSpectrum], controls: RankControls) -> RankPlan:
    """The plan the controls describe: overrides first, then each linear matrix's kind rank.

    Names and kinds the spectra do not have are ignored; ranks are clipped to each matrix's
    full rank, and matrices at or past break-even are left out (dense).
    """
    kind_ranks, overrides = dict(controls.kind_ranks), dict(controls.overrides)
    ranks = {}
    for sp in spectra:
        requested = overrides.get(sp.name)
        if requested is None and not sp.is_embedding:
            requested = kind_ranks.get(sp.kind)
        kept = _kept_rank(requested, sp)
        if kept is not None:
            ranks[sp.name] = kept
    return RankPlan(ranks)


def controls_from_plan(spectra: list[LayerSpectrum], plan: RankPlan) -> RankControls:
    """Settings that reproduce ``plan``: each kind's most common rank, overrides for the rest.

    ``plan_from_controls(spectra, controls_from_plan(spectra, plan))`` equals ``plan`` without
    its entries at or past break-even (which mean dense anyway).
    """
    by_name = {sp.name: sp for sp in spectra}
    planned = plan.as_dict()
    kept = {sp.name: _kept_rank(planned.get(sp.name), sp) for sp in spectra}
    kind_ranks, overrides = {}, {}
    for info in linear_kinds(spectra):
        # Dense counts as the kind's full rank, which keeps every matrix of the kind dense.
        counts = Counter(kept[name] or info.full_rank for name in info.names)
        best = max(counts.items(), key=lambda item: (item[1], item[0]))[0]
        kind_ranks[info.kind] = best
        for name in info.names:
            if _kept_rank(best, by_name[name]) != kept[name]:
                overrides[name] = kept[name] or by_name[name].full_rank
    for sp in spectra:
        if sp.is_embedding and kept[sp.name] is not None:
            overrides[sp.name] = kept[sp.name]
    return RankControls(kind_ranks, overrides)


def read_plan(data: str | bytes, spectra: list[LayerSpectrum]) -> RankPlan:
    """Read an uploaded rank plan and check it against the model.

    Args:
        data: the file's contents (JSON written by :meth:`RankPlan.to_json`, or ``{name: rank}``).
        spectra: the model's spectra, for the names and full ranks.

    Raises:
        InvalidRankPlan: not JSON, not an object of name → rank, unknown module names, or
            ranks outside 1..full rank; the message says which.
    """
    try:
        plan = RankPlan.from_json(data)
    except RecursionError:
        raise InvalidRankPlan("the rank plan nests too deeply to be a rank plan; upload a file saved here") from None
    plan.validate(spectra)
    return plan
