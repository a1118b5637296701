"""A model at a glance: its weight matrices grouped by kind, with shapes and parameter shares."""

from __future__ import annotations

from dataclasses import dataclass

from lowrank_lab.matrices import WeightMatrix


@dataclass(frozen=True)
class KindRow:
    """The matrices of one kind.

    Attributes:
        kind: e.g. ``self_attn.q_proj``, or a module outside the layers (``lm_head``).
        matrices: how many there are (one per layer for a layered kind).
        shapes: their distinct shapes (out×in), in order of appearance.
        params: their parameters together.
        model_fraction: ``params`` as a fraction of all the model's parameters.
        embedding: True for embeddings (and heads tied to them).
        tied_to: modules sharing these weights (counted once).
    """

    kind: str
    matrices: int
    shapes: tuple[tuple[int, int], ...]
    params: int
    model_fraction: float
    embedding: bool
    tied_to: tuple[str, ...] = ()


def kind_rows(matrices: list[WeightMatrix], model_params: int) -> list[KindRow]:
    """Group ``matrices`` by kind, in model order.

    Args:
        matrices: from :func:`lowrank_lab.matrices.weight_matrices`.
        model_params: all the model's parameters (tied ones once), for the fractions.
    """
    groups: dict[str, list[WeightMatrix]] = {}
    for m in matrices:
        groups.setdefault(m.kind, []).append(m)
    rows = []
    for kind, group in groups.items():
        params = sum(m.params for m in group)
        rows.append(
            KindRow(
                kind=kind,
                matrices=len(group),
                shapes=tuple(dict.fromkeys(m.shape for m in group)),
                params=params,
                model_fraction=params / model_params if model_params else 0.0,
                embedding=any(m.is_embedding for m in group),
                tied_to=tuple(t for m in group for t in m.tied_to),
            )
        )
    return rows


def layer_count(matrices: list[WeightMatrix]) -> int:
    """How many repeated layers the matrices sit in."""
    return len({m.layer for m in matrices if m.layer is not None})
