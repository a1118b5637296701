"""The math on one matrix: ordered decompositions W ≈ Σᵢ σᵢ uᵢ aᵢ and their rank-r factors.

Notation: W is out×in (whatever the layer stores), a layer computes y = W x + b, and the
calibration statistics are XᵀX = Σₜ xₜxₜᵀ (in×in) and Σₜ xₜ over its input tokens.

- ``svd``: W = U Σ Vᵀ; truncating σᵢ costs σᵢ² of ‖W − Ŵ‖_F².
- ``whitened`` (SVD-LLM): S Sᵀ = XᵀX (Cholesky), W S = U Σ Vᵀ, Ŵ = U_r Σ_r V_rᵀ S⁻¹. Since
  ‖(W − Ŵ) X‖_F = ‖(W − Ŵ) S‖_F, truncating σᵢ costs exactly σᵢ² of the squared output error
  summed over the calibration tokens.
- ``pca``: project the layer's output onto the top-r principal components U_r of its output
  activations: ŷ = P W x + P b + (I − P) μ_y with P = U_r U_rᵀ, so B = U_r, A = U_rᵀ W.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lowrank_lab.compress.calibration import InputStats
from lowrank_lab.errors import SettingsError
from lowrank_lab.threads import one_lapack_thread

# Regularisation of XᵀX before its Cholesky factor, as multiples of its mean diagonal: the
# first that works is used (rank-deficient XᵀX, e.g. fewer tokens than inputs, needs one).
_RIDGE = (1e-8, 1e-6, 1e-4, 1e-2, 1e-1)


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


def whitening_factor(xtx: torch.Tensor) -> torch.Tensor:
    """Lower-triangular S with S Sᵀ = XᵀX + λI, λ the smallest ridge that makes it positive definite.

    Raises:
        SettingsError: no ridge helps (the statistics hold NaN or inf).
    """
    xtx = xtx.double()
    scale = float(xtx.diagonal().mean())
    if not torch.isfinite(xtx).all():
        raise SettingsError("the calibration statistics hold NaN or inf; the model overflows on the calibration text")
    if scale <= 0:
        scale = 1.0  # all-zero inputs: any positive ridge whitens them
    eye = torch.eye(xtx.shape[0], dtype=torch.float64)
    for ridge in _RIDGE:
        s, info = torch.linalg.cholesky_ex(xtx + ridge * scale * eye)
        if int(info) == 0:
            return s
    raise SettingsError("XᵀX of the calibration inputs is not positive definite even with a ridge of 0.1·mean diagonal")


def whitened_decomposition(w: torch.Tensor, stats: InputStats) -> Decomposition:
    """SVD of W·S mapped back with S⁻¹ (see the module docstring); S is kept on ``stats``."""
    if stats.whitening is None:
        stats.whitening = whitening_factor(stats.xtx)
    s_fac = stats.whitening  # (in, in) lower
    u, s, vh = torch.linalg.svd(w.double() @ s_fac, full_matrices=False)  # (out,k), (k,), (k,in)
    a = torch.linalg.solve_triangular(s_fac, vh, upper=False, left=False)  # Vᵀ S⁻¹, (k, in)
    return Decomposition(u, s, a)


def pca_factors(
    w: torch.Tensor, bias: torch.Tensor | None, stats: InputStats, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Factors projecting the output onto its top-r principal components.

    Cov(y) = W Cov(x) Wᵀ and μ_y = W μ_x + b follow from the input statistics, so no output
    needs storing.

    Returns:
        (B = U_r (out×r), A = U_rᵀ W (r×in), bias = P b + (I − P) μ_y (out,)), float64.
    """
    w = w.double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.double()
    cov_y = w @ stats.covariance() @ w.T  # (out, out)
    _, vecs = torch.linalg.eigh((cov_y + cov_y.T) / 2)  # ascending
    u_r = vecs[:, -rank:].flip(1)  # (out, r), largest first
    mu_y = w @ stats.mean + b  # (out,)
    new_bias = mu_y - u_r @ (u_r.T @ (mu_y - b))  # P b + (I − P) μ_y
    return u_r, u_r.T @ w, new_bias
