"""Which matrices compression decomposes: every Linear and Conv1D weight, no embeddings.

The decompositions themselves are taken block by block by the engine
(:mod:`lowrank_lab.compress.engine`, :mod:`lowrank_lab.compress.refit`) and by the cost pass
(:mod:`lowrank_lab.compress.costs`); none is kept for the whole model.
"""

from __future__ import annotations

from lowrank_lab.matrices import WeightMatrix, weight_matrices
from lowrank_lab.models import LoadedModel


def linear_matrices(loaded: LoadedModel) -> list[WeightMatrix]:
    """The model's Linear and Conv1D matrices (no embeddings, no head tied to them)."""
    return weight_matrices(loaded.model, include_embeddings=False)
