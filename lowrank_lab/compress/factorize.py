"""The math on one matrix: ordered decompositions W ≈ Σᵢ σᵢ uᵢ aᵢ and their rank-r factors.

Notation: W is out×in (whatever the layer stores), a layer computes y = W x + b, and the
calibration statistics are XᵀX = Σₜ xₜxₜᵀ (in×in) and Σₜ xₜ over its input tokens.

- ``svd``: W = U Σ Vᵀ; truncating σᵢ costs σᵢ² of ‖W − Ŵ‖_F².
- ``whitened`` (SVD-LLM, refit to the dense outputs): see :mod:`lowrank_lab.compress.refit`.
- ``pca``: project the layer's output onto the top-r principal components U_r of its output
  activations: ŷ = P W x + P b + (I − P) μ_y with P = U_r U_rᵀ, so B = U_r, A = U_rᵀ W.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lowrank_lab.threads import one_lapack_thread


@contextmanager
def lapack_thread() -> Iterator[None]:
    """Run LAPACK (SVD, Cholesky, eigh) on one thread, in the calling thread only.

    On a shared two-core machine torch's two-thread pool makes float64 decompositions about
    10× slower (its threads wait on each other while another process holds a core). The limit
    is thread-scoped (see :mod:`lowrank_lab.threads`): ``torch.set_num_threads`` would change
    every other session's threads too, and interleaved save/restore could leave them on one.
    """
    with one_lapack_thread():
        yield


@dataclass(frozen=True, eq=False)
class Decomposition:
    """W ≈ (U·diag(s)) @ A, terms ordered by what dropping them costs.

    Attributes:
        u: (out, k) left vectors.  s: (k,) descending weights.  a: (k, in) right factors
            (Vᵀ for ``svd``, Vᵀ S⁻¹ for ``whitened``).  k = min(out, in).
    """

    u: torch.Tensor
    s: torch.Tensor
    a: torch.Tensor

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank-r factors (B (out×r), A (r×in)), σ split evenly between them, float64."""
        root = self.s[:rank].double().sqrt()  # (r,)
        return self.u[:, :rank].double() * root, root[:, None] * self.a[:rank].double()


def svd_decomposition(w: torch.Tensor) -> Decomposition:
    """Plain SVD of W (out×in)."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)  # (out,k), (k,), (k,in)
    return Decomposition(u, s, vh)


def pca_factors(
    w: torch.Tensor, bias: torch.Tensor | None, stats, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factors projecting the output onto its top-r principal components.

    Cov(y) = W Cov(x) Wᵀ and μ_y = W μ_x + b follow from the input statistics, so no output
    needs storing.

    Returns:
        (B = U_r (out×r), A = U_rᵀ W (r×in), bias = P b + (I − P) μ_y (out,)), float64.
    """
    w = w.double()
    b = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) if bias is None else bias.double()
    cov_y = w @ stats.covariance() @ w.T  # (out, out)
    _, vecs = torch.linalg.eigh((cov_y + cov_y.T) / 2)  # ascending
    u_r = vecs[:, -rank:].flip(1)  # (out, r), largest first
    mu_y = w @ stats.mean + b  # (out,)
    new_bias = mu_y - u_r @ (u_r.T @ (mu_y - b))  # P b + (I − P) μ_y
    return u_r, u_r.T @ w, new_bias
