"""Helpers for run-store tests: a comparison with chosen perplexities, for records of real compressions."""

from __future__ import annotations

from lowrank_lab.comparison import Comparison, ModelFigures
from lowrank_lab.models import CompressedModel


def measured(compressed: CompressedModel, dense: float, ppl: float) -> Comparison:
    """A :class:`Comparison` of ``compressed`` whose perplexities are ``dense`` and ``ppl`` (the rest real counts)."""
    p = compressed.params
    return Comparison(
        dense=ModelFigures(p.dense, 4 * p.dense, dense, 1.0, 1000),
        compressed=ModelFigures(p.compressed, 4 * p.compressed, ppl, 1.0, 900),
        generations=(),
        eval_source="test text",
        eval_tokens=64,
        latency_tokens=8,
    )
