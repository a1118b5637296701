"""The top-r factors of a weight change: ΔW ≈ B·A with B (m×r) and A (r×n).

Eckart–Young: the best rank-r approximation keeps ΔW's top r singular directions. We take them
from the symmetric eigenproblem of the Gram matrix on the smaller side (ΔWᵀΔW or ΔWΔWᵀ, float64),
asking LAPACK for the top r eigenvectors only, and form the other factor by one product with ΔW.
B·A is then ΔW projected onto that r-dimensional subspace, the best a subspace of its span can
do, and a full SVD (all of U, S, Vᵀ) is never built. σ is split evenly, B = U·√σ and A = √σ·Vᵀ,
so neither factor carries the whole scale when stored in half precision.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def top_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Factors of the best rank-``rank`` approximation of ``delta``.

    Args:
        delta: the change, out×in (m×n), any float dtype (computed in float64).
        rank: r, 1 ≤ r ≤ min(m, n).

    Returns:
        (B of shape (m, r), A of shape (r, n), both float32; the r singular values, descending).

    Raises:
        ValueError: ``rank`` out of range.
    """
    m, n = delta.shape
    k = min(m, n)
    if not 1 <= rank <= k:
        raise ValueError(f"rank {rank} is outside 1..{k} for a {m}×{n} matrix")
    d = delta.detach().to("cpu", torch.float64).numpy()
    wide = m < n  # Gram on the smaller side: d·dᵀ (m×m) if wide, else dᵀ·d (n×n)
    gram = d @ d.T if wide else d.T @ d
    values, vectors = scipy.linalg.eigh(gram, subset_by_index=[k - rank, k - 1], check_finite=False)
    order = np.argsort(values)[::-1]
    sigma = np.sqrt(np.clip(values[order], 0.0, None))  # (r,)
    vectors = vectors[:, order]  # (k, r): left vectors U if wide, right vectors V otherwise
    root = np.sqrt(sigma)
    inv_root = np.divide(1.0, root, out=np.zeros_like(root), where=root > 0)
    if wide:
        b = vectors * root  # U·√σ, (m, r)
        a = (vectors.T @ d) * inv_root[:, None]  # √σ·Vᵀ = σ^(-1/2)·Uᵀ·ΔW, (r, n)
    else:
        a = vectors.T * root[:, None]  # √σ·Vᵀ, (r, n)
        b = (d @ vectors) * inv_root  # U·√σ = ΔW·V·σ^(-1/2), (m, r)
    return (
        torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)),
        sigma,
    )
