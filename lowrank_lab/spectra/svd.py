"""Singular values, fast and accurate, on the CPU or a GPU.

We take the eigenvalues of the Gram matrix on the smaller side (W·Wᵀ or Wᵀ·W) in float64: one
symmetric rank-k update (``dsyrk``, half the flops of a general product) and one symmetric
eigenvalue solve, much cheaper than a bidiagonal SVD of W on a two-core CPU (bench/spectra.py
measures it). Squaring W squares its condition number, which is why both steps run in
float64: an eigenvalue λ carries an absolute error of about n·ε₆₄·λ_max, so every singular
value at or above 1e-3·σ_max keeps a relative error near 1e-10, far inside the 1e-3 we
promise. Values below about 1e-6·σ_max (``RESOLUTION``) are not resolved this way; for
float32 weights they sit under the weights' own noise floor (max(m, n)·ε₃₂ ≈ 1e-4) anyway.

Many matrices run on a small thread pool, one BLAS thread each: the LAPACK calls release the
GIL (see ``_lapack``), and the symmetric eigenvalue solve, which dominates, barely speeds up
with more BLAS threads but does with more matrices at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from lowrank_lab.spectra import _lapack
from lowrank_lab.threads import ordered_map

# Relative to σ_max, the smallest singular value the float64 Gram route resolves, for sizes up
# to k ≈ 4500: sqrt(k·ε₆₄) ≈ 1e-6.
RESOLUTION = 1e-6

# Long matrices are folded into the Gram in blocks of rows or columns, bounding the float64 copy.
_BLOCK = 8192


def _as_float_numpy(w: torch.Tensor) -> np.ndarray:
    t = w.detach().cpu()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # numpy has no bf16; fp16/bf16 → fp32 is exact
    return t.numpy()


def _singular_values_cpu(w: torch.Tensor) -> np.ndarray:
    a = _as_float_numpy(w)  # (m, n), any strides
    if not a.flags.c_contiguous and a.T.flags.c_contiguous:
        a = a.T  # a transposed view (Conv1D): same singular values, contiguous memory
    rows, cols = a.shape
    transpose = rows < cols  # Gram on the smaller side: x·xᵀ (rows²) if wide, else xᵀx (cols²)
    k = min(rows, cols)
    gram = np.zeros((k, k), dtype=np.float64, order="F")
    if transpose:
        for start in range(0, cols, _BLOCK):
            _lapack.syrk_upper(np.ascontiguousarray(a[:, start : start + _BLOCK], dtype=np.float64), gram, True)
    else:
        for start in range(0, rows, _BLOCK):
            _lapack.syrk_upper(np.ascontiguousarray(a[start : start + _BLOCK], dtype=np.float64), gram, False)
    eig = _lapack.eigvalsh_upper(gram)
    return np.sqrt(np.clip(eig[::-1], 0.0, None))


def _singular_values_cuda(w: torch.Tensor, device: torch.device) -> np.ndarray:
    a = w.detach().to(device, torch.float64)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    eig = torch.linalg.eigvalsh(gram).cpu().numpy()
    return np.sqrt(np.clip(eig[::-1], 0.0, None))


def singular_values(w: torch.Tensor, device: str | torch.device | None = None) -> np.ndarray:
    """Return the singular values of a 2-D tensor, largest first.

    Args:
        w: a matrix of any float dtype (fp16/bf16 are widened), shape (m, n).
        device: where to compute; ``None`` uses the tensor's own device. On CUDA the Gram
            product and the eigenvalue solve run on the GPU, in float64.

    Returns:
        ``min(m, n)`` singular values, float64, descending.
    """
    if w.dim() != 2:
        raise ValueError(f"singular_values needs a 2-D tensor, got shape {tuple(w.shape)}")
    dev = torch.device(device) if device is not None else w.device
    if dev.type == "cuda":
        return _singular_values_cuda(w, dev)
    return _singular_values_cpu(w)


def singular_values_many(
    matrices: Iterable[torch.Tensor],
    device: str | torch.device | None = None,
    workers: int | None = None,
) -> Iterator[np.ndarray]:
    """Singular values of many matrices, yielded in order as they finish.

    Args:
        matrices: 2-D tensors.
        device: as in :func:`singular_values`; on CUDA they run one after another.
        workers: CPU threads, one BLAS thread each; default: the number of CPUs (at most 8).
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        for w in matrices:
            yield singular_values(w, dev)
        return
    workers = workers or min(8, os.cpu_count() or 1)
    # Drawn lazily, at most workers + 1 in flight (pool.map would read every matrix first); one
    # BLAS thread each, under OpenBLAS's shared process-wide limit.
    yield from ordered_map(((_singular_values_cpu, (w,)) for w in matrices), workers)


def top_triplets(
    a: np.ndarray,
    width: int,
    converged: Callable[[np.ndarray], bool],
    max_iterations: int = 12,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The top singular triplets of ``a`` by subspace iteration, until ``converged`` says so.

    A block of ``width`` vectors is multiplied by ``a`` and ``aᵀ`` in turn (re-orthonormalized
    each time) and the Rayleigh–Ritz values of the block are handed to ``converged`` after each
    step; they approach the top singular values from below, and the block's span approaches the
    top singular subspace, at the rate σ_{width+1}/σᵢ per product. Each step costs two products
    of ``a`` with ``width`` columns, so for a few directions of a large matrix this is far cheaper
    than a full eigen- or singular-value solve — and the caller, knowing the exact spectrum or
    the tolerance it needs, decides when it is good enough.

    Args:
        a: the matrix (m×n), float64.
        width: block size, 1 ≤ width ≤ min(m, n) (the directions wanted plus some oversampling).
        converged: called with the Ritz values (descending, length ``width``) after each step.
        max_iterations: the most power steps after the first sketch.
        seed: the starting block's random seed (the result is deterministic).

    Returns:
        (U (m×width), σ (width,), Vᵀ (width×n), whether ``converged`` accepted them).
    """
    m, n = a.shape
    if not 1 <= width <= min(m, n):
        raise ValueError(f"width {width} is outside 1..{min(m, n)} for a {m}×{n} matrix")
    start = np.random.default_rng(seed).standard_normal((n, width))
    q = np.linalg.qr(a @ start)[0]  # (m, width)
    for step in range(max_iterations + 1):
        b = q.T @ a  # (width, n): the Rayleigh–Ritz projection
        ub, s, vt = np.linalg.svd(b, full_matrices=False)
        done = converged(s)
        if done or step == max_iterations:
            return q @ ub, s, vt, done
        q = np.linalg.qr(a @ np.linalg.qr(b.T)[0])[0]  # one more product with aᵀ, then with a
    raise AssertionError("unreachable")
