"""The math on one layer fed shifted inputs: the best rank-r weight against the dense layer's outputs.

Block by block, a layer of block k no longer sees the inputs the dense model gives it (X,
in×N over N calibration tokens) but those the already-compressed blocks produce (X̃). The
engine asks for the rank-r Ŵ minimising

    ‖W X − Ŵ X̃‖_F²                                   (the dense layer's outputs, anchored)

Write G = X̃ X̃ᵀ (+ a ridge λI) and C = X X̃ᵀ. The unconstrained minimiser is Ŵ₀ = W C G⁻¹,
and the residual of a least-squares fit is orthogonal to every Ŵ X̃, so

    ‖W X − Ŵ X̃‖² = ‖W X − Ŵ₀ X̃‖² + ‖(Ŵ₀ − Ŵ) X̃‖².

The first term does not depend on Ŵ; the second is a whitened truncation of Ŵ₀ (SVD-LLM's,
with S Sᵀ = G): SVD of Ŵ₀ S = W C S⁻ᵀ = U Σ Vᵀ, Ŵ = U_r Σ_r V_rᵀ S⁻¹. A ridge λ‖W − Ŵ‖²
added to the objective turns G into G + λI and C into C + λI and keeps all of this exact. So the refit is closed
form and exact: no rank-r weight does better on the calibration tokens. With X = X̃ (block 0, or
``target="shifted"``) C = X̃X̃ᵀ and it is the plain whitened truncation. The ridge keeps
directions the calibration tokens barely visit from being fitted to noise.
"""

from __future__ import annotations

import torch

from lowrank_lab.compress.factorize import Decomposition
from lowrank_lab.errors import SettingsError

_CHUNK = 1024
# Ridges tried after the asked one when G + λI is not positive definite (multiples of its mean diagonal).
_RIDGES = (1e-8, 1e-6, 1e-4, 1e-2, 1e-1)


class PairStats:
    """Running sums over a layer's calibration tokens: X̃ᵀX̃, Σ x̃, and (when anchored) X X̃ᵀ.

    Products of float32 chunks of ``_CHUNK`` tokens are summed in float64: 0.7× the time of
    float64 products, with rounding far below the ridge (largest entry error ~1e-7 relative on
    8192 tokens × 1536; chunks of 1024 took half the time of chunks of 256, which converted
    and added an in×in matrix four times as often).

    Args:
        dim: the layer's input size.
        cross: also sum X X̃ᵀ (the dense inputs against the shifted ones).
        device: where the sums live (the device the block work runs on).
    """

    def __init__(self, dim: int, cross: bool, device: torch.device | str | None = None):
        zeros = dict(dtype=torch.float64, device=device)
        self.g = torch.zeros(dim, dim, **zeros)  # Σ x̃ x̃ᵀ
        self.c = torch.zeros(dim, dim, **zeros) if cross else None  # Σ x x̃ᵀ
        self.xsum = torch.zeros(dim, **zeros)  # Σ x̃
        self.count = 0
        self.whitening: torch.Tensor | None = None

    def add(self, shifted: torch.Tensor, dense: torch.Tensor | None = None) -> None:
        """Add tokens: ``shifted`` x̃ (…, in) and, when cross sums are kept, ``dense`` x of the same tokens."""
        xs = shifted.reshape(-1, shifted.shape[-1]).float()  # (tokens, in)
        xd = None if self.c is None else dense.reshape(-1, dense.shape[-1]).float()
        # One float32 in×in product at a time, added into the float64 sums in place: no float64
        # temporary of in×in (at 7B's 11008-wide down_proj input each such matrix is 0.97 GB).
        product = torch.empty(xs.shape[-1], xs.shape[-1], dtype=torch.float32, device=xs.device)
        for start in range(0, xs.shape[0], _CHUNK):
            part = xs[start : start + _CHUNK]
            _add_rows(self.g, torch.matmul(part.T, part, out=product))
            self.xsum += part.double().sum(0)
            if xd is not None:
                _add_rows(self.c, torch.matmul(xd[start : start + _CHUNK].T, part, out=product))
        self.count += xs.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.xsum / max(self.count, 1)

    def covariance(self) -> torch.Tensor:
        mu = self.mean
        return self.g / max(self.count, 1) - torch.outer(mu, mu)

    @property
    def xtx(self) -> torch.Tensor:  # the name InputStats uses, so pca_factors reads either
        return self.g


def _add_rows(total: torch.Tensor, part: torch.Tensor, rows: int = 512) -> None:
    """total += part, a float32 matrix into a float64 one, a few rows at a time (torch converts
    the whole right-hand side at once otherwise: a float64 temporary of the full size)."""
    for start in range(0, total.shape[0], rows):
        total[start : start + rows].add_(part[start : start + rows])


def _svd(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of an out×in float64 matrix through the eigenvectors of its smaller Gram matrix.

    A symmetric eigendecomposition of the min(out, in)-sized Gram matrix costs a fraction of
    a full SVD; squaring the matrix loses only components below ~1e-8 of σ₁, which no useful
    rank keeps.
    """
    out_dim, in_dim = m.shape
    if out_dim <= in_dim:
        vals, u = torch.linalg.eigh(m @ m.T)  # ascending
        vals, u = vals.flip(0).clamp_min(0), u.flip(1)
        s = vals.sqrt()
        vh = (u.T @ m) / s.clamp_min(s[0] * 1e-12 if s.numel() else 1.0)[:, None]
    else:
        vals, v = torch.linalg.eigh(m.T @ m)
        vals, v = vals.flip(0).clamp_min(0), v.flip(1)
        s = vals.sqrt()
        u = (m @ v) / s.clamp_min(s[0] * 1e-12 if s.numel() else 1.0)[None, :]
        vh = v.T
    return u, s, vh


def whitening(g: torch.Tensor, ridge: float) -> tuple[torch.Tensor, float]:
    """(S, λ): lower-triangular S with S Sᵀ = G + λI, λ = ``ridge``·mean diag(G) or the next that works.

    Raises:
        SettingsError: G holds NaN or inf, or no ridge up to 0.1·mean diagonal makes it positive definite.
    """
    if not torch.isfinite(g).all():
        raise SettingsError("the calibration statistics hold NaN or inf; the model overflows on the calibration text")
    scale = float(g.diagonal().mean())
    scale = scale if scale > 0 else 1.0  # all-zero inputs: any positive ridge whitens them
    for r in sorted({ridge, *(x for x in _RIDGES if x > ridge)}):
        s = _plus_diagonal(g, r * scale)
        info = torch.empty((), dtype=torch.int32, device=g.device)
        torch.linalg.cholesky_ex(s, out=(s, info))  # in place: one in×in matrix, not two
        if int(info) == 0:
            return s, r * scale
    raise SettingsError("XᵀX of the calibration inputs is not positive definite even with a ridge of 0.1·mean diagonal")


def _plus_diagonal(g: torch.Tensor, value: float) -> torch.Tensor:
    """G + value·I as one new matrix (no identity matrix beside it)."""
    out = g.clone()
    out.diagonal().add_(value)
    return out


def anchored_decomposition(w: torch.Tensor, stats: PairStats, ridge: float) -> Decomposition:
    """Components of the best rank-r Ŵ for ‖W X − Ŵ X̃‖² + λ‖W − Ŵ‖² (module docstring), strongest first.

    The ridge pulls Ŵ towards W (not towards 0), so at full rank and X̃ = X it gives back W.

    Args:
        w: the dense weight, out×in.
        stats: the layer's sums; without cross sums the target is W X̃ (plain whitening).
        ridge: λ as a multiple of the mean diagonal of X̃ᵀX̃ (raised if G + λI is not definite).

    Returns:
        A :class:`Decomposition` whose ``factors(r)`` give B (out×r) and A (r×in).
    """
    if stats.whitening is None:
        stats.whitening = whitening(stats.g, ridge)
    s_fac, lam = stats.whitening  # (in, in) lower triangular, S Sᵀ = G + λI
    w = w.double()
    if stats.c is None:
        return _truncation(w @ s_fac, s_fac)  # W (G + λI) S⁻ᵀ = W S
    return _truncation(torch.linalg.solve_triangular(s_fac, (w @ stats.c + lam * w).T, upper=False).T, s_fac)


def output_decomposition(w: torch.Tensor, target_cross: torch.Tensor, stats: PairStats, ridge: float) -> Decomposition:
    """Components of the best rank-r Ŵ for ‖Y* − Ŵ X̃‖² + λ‖W − Ŵ‖², given P = Σ_t y*_t x̃_tᵀ (out×in).

    The same algebra as :func:`anchored_decomposition` with W C replaced by any target's cross
    sum, e.g. the dense block's output minus what the rest of the shifted block already adds.
    """
    if stats.whitening is None:
        stats.whitening = whitening(stats.g, ridge)
    s_fac, lam = stats.whitening
    w = w.double()
    return _truncation(torch.linalg.solve_triangular(s_fac, (target_cross.double() + lam * w).T, upper=False).T, s_fac)


def _truncation(target: torch.Tensor, s_fac: torch.Tensor) -> Decomposition:
    """SVD of Ŵ₀ S (out×in) mapped back with S⁻¹."""
    u, s, vh = _svd(target)  # (out,k), (k,), (k,in)
    a = torch.linalg.solve_triangular(s_fac, vh, upper=False, left=False)  # Vᵀ S⁻¹, (k, in)
    return Decomposition(u, s, a)


def refit_b(w: torch.Tensor, a: torch.Tensor, stats: PairStats, ridge: float) -> torch.Tensor:
    """B minimising ‖W X − B A X̃‖² + λ‖W − B A‖² for a fixed A (r×in), out×r float64.

    B = W (C + λI) Aᵀ (A (G + λI) Aᵀ)⁻¹, with λ as :func:`anchored_decomposition` picks it.
    """
    if stats.whitening is None:
        stats.whitening = whitening(stats.g, ridge)
    _, lam = stats.whitening
    a = a.double()
    cross = _plus_diagonal(stats.g if stats.c is None else stats.c, lam)
    rhs = w.double() @ cross @ a.T  # (out, r)
    lhs = a @ _plus_diagonal(stats.g, lam) @ a.T  # (r, r)
    return torch.linalg.solve(lhs, rhs.T).T
