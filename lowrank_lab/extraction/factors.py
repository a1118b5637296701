"""The top-r factors of a weight change: ΔW ≈ B·A with B (m×r) and A (r×n).

Eckart–Young: the best rank-r approximation keeps ΔW's top r singular directions, and loses
exactly the dropped σᵢ². Two ways to find those directions, both in float64:

* **Subspace iteration**, when r is small beside min(m, n) and ΔW's singular values are known
  (the delta spectra computed them): a block of r + p vectors multiplied by ΔW and ΔWᵀ in turn
  (:func:`~lowrank_lab.spectra.svd.top_triplets`). Since the exact σ are known, so is the
  exact loss of the best rank-r factors, and the iteration stops only when its factors lose no
  more than that (to 1e-7 of the loss, or of ΔW's energy where the loss is rounding). It costs
  a few products of ΔW with r + p columns, where a full solve costs O(min(m, n)³).
* **The Gram eigenproblem** otherwise (large r, no known σ, or an iteration that did not
  settle): the symmetric eigenproblem of ΔWᵀΔW or ΔWΔWᵀ on the smaller side, asking LAPACK for
  the top r eigenvectors only, the other factor by one product with ΔW.

Either way B·A is ΔW projected onto an r-dimensional subspace, and a full SVD (all of U, S, Vᵀ)
is never built. σ is split evenly, B = U·√σ and A = √σ·Vᵀ, so neither factor carries the whole
scale when stored in half precision.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from lowrank_lab.spectra.svd import top_triplets

# Subspace iteration pays while the block (r + oversampling) is at most this part of min(m, n).
_ITERATE_UP_TO = 0.25
_OVERSAMPLE = 10
# Extra loss accepted, relative to the optimal loss (or to ΔW's energy where that loss is rounding).
_LOSS_RTOL = 1e-7
_ENERGY_FLOOR = 1e-12


def _split(u: np.ndarray, sigma: np.ndarray, vt: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    root = np.sqrt(sigma)
    return (
        torch.from_numpy(np.ascontiguousarray(u * root, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(vt * root[:, None], dtype=np.float32)),
    )


def _by_iteration(d: np.ndarray, rank: int, known: np.ndarray):
    """Top ``rank`` triplets by subspace iteration, checked against the known singular values; None if unsettled."""
    energy = np.square(known)
    kept, lost = float(energy[:rank].sum()), float(energy[rank:].sum())
    allowed = _LOSS_RTOL * lost + _ENERGY_FLOOR * (kept + lost)

    def settled(s: np.ndarray) -> bool:
        return kept - float(np.square(s[:rank]).sum()) <= allowed  # the extra loss, by Pythagoras

    width = min(rank + _OVERSAMPLE, *d.shape)
    u, s, vt, done = top_triplets(d, width, settled, max_iterations=16)
    return (u[:, :rank], s[:rank], vt[:rank]) if done else None


def _by_gram(d: np.ndarray, rank: int):
    m, n = d.shape
    k = min(m, n)
    wide = m < n  # Gram on the smaller side: d·dᵀ (m×m) if wide, else dᵀ·d (n×n)
    gram = d @ d.T if wide else d.T @ d
    values, vectors = scipy.linalg.eigh(gram, subset_by_index=[k - rank, k - 1], check_finite=False)
    order = np.argsort(values)[::-1]
    sigma = np.sqrt(np.clip(values[order], 0.0, None))  # (r,)
    vectors = vectors[:, order]  # (k, r): left vectors U if wide, right vectors V otherwise
    inv = np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > 0)
    if wide:
        return vectors, sigma, (vectors.T @ d) * inv[:, None]  # Vᵀ = σ⁻¹·Uᵀ·ΔW
    return (d @ vectors) * inv, sigma, vectors.T  # U = ΔW·V·σ⁻¹


def top_factors(
    delta: torch.Tensor, rank: int, singular_values: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Factors of the best rank-``rank`` approximation of ``delta``.

    Args:
        delta: the change, out×in (m×n), any float dtype (computed in float64).
        rank: r, 1 ≤ r ≤ min(m, n).
        singular_values: all of ΔW's singular values, descending, when known (the delta
            spectrum): they let a cheap subspace iteration stop exactly when it is as good as
            the full solve.

    Returns:
        (B of shape (m, r), A of shape (r, n), both float32; the r singular values, descending).

    Raises:
        ValueError: ``rank`` out of range, or singular values of the wrong length.
    """
    m, n = delta.shape
    k = min(m, n)
    if not 1 <= rank <= k:
        raise ValueError(f"rank {rank} is outside 1..{k} for a {m}×{n} matrix")
    if singular_values is not None and np.shape(singular_values) != (k,):
        raise ValueError(f"expected {k} singular values for a {m}×{n} matrix, got {np.shape(singular_values)}")
    d = delta.detach().to("cpu", torch.float64).numpy()
    found = None
    if singular_values is not None and rank + _OVERSAMPLE <= _ITERATE_UP_TO * k:
        found = _by_iteration(d, rank, np.asarray(singular_values, dtype=np.float64))
    u, sigma, vt = found if found is not None else _by_gram(d, rank)
    b, a = _split(u, sigma, vt)
    return b, a, sigma
