"""Two LAPACK/BLAS calls that release the GIL, so two threads can use two cores.

SciPy's own wrappers (``scipy.linalg.eigh``, ``scipy.linalg.blas.dsyrk``) hold the GIL while
they run, so a thread pool gains nothing from them. SciPy also exports the raw routines of the
LAPACK it ships as C function pointers (``scipy.linalg.cython_lapack``); calling those through
ctypes releases the GIL for the duration of the call.
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy.linalg import cython_blas, cython_lapack

_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_double_p = ctypes.POINTER(ctypes.c_double)
_c_char_p = ctypes.c_char_p


def _function(capi: dict, name: str, *argtypes):
    capsule = capi[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None, *argtypes)(get_pointer(capsule, get_name(capsule)))


# dsyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc): C ← α·op(A)·op(A)ᵀ + β·C
_dsyrk = _function(
    cython_blas.__pyx_capi__,
    "dsyrk",
    _c_char_p,
    _c_char_p,
    _c_int_p,
    _c_int_p,
    _c_double_p,
    _c_double_p,
    _c_int_p,
    _c_double_p,
    _c_double_p,
    _c_int_p,
)
# dsyev(jobz, uplo, n, a, lda, w, work, lwork, info): eigenvalues (jobz="N") of a symmetric A
_dsyev = _function(
    cython_lapack.__pyx_capi__,
    "dsyev",
    _c_char_p,
    _c_char_p,
    _c_int_p,
    _c_double_p,
    _c_int_p,
    _c_double_p,
    _c_double_p,
    _c_int_p,
    _c_int_p,
)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_c_double_p)


def syrk_upper(x: np.ndarray, c: np.ndarray, transpose: bool) -> None:
    """Add the upper triangle of X·Xᵀ (or Xᵀ·X) to ``c`` in place, X read column-major.

    Args:
        x: float64, C-contiguous (rows, cols); Fortran sees it as Xᶠ = xᵀ, (cols, rows).
        c: float64, Fortran-ordered (n, n): n = cols if not ``transpose`` (c += xᵀx),
            n = rows if ``transpose`` (c += x·xᵀ).
        transpose: see above.
    """
    rows, cols = x.shape
    n, k = (rows, cols) if transpose else (cols, rows)
    one = ctypes.c_double(1.0)
    _dsyrk(
        b"U",
        b"T" if transpose else b"N",
        ctypes.byref(ctypes.c_int(n)),
        ctypes.byref(ctypes.c_int(k)),
        ctypes.byref(one),
        _ptr(x),
        ctypes.byref(ctypes.c_int(cols)),
        ctypes.byref(one),
        _ptr(c),
        ctypes.byref(ctypes.c_int(n)),
    )


def eigvalsh_upper(c: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of the symmetric matrix whose upper triangle ``c`` holds.

    ``c`` (float64, Fortran-ordered, square) is overwritten.

    Raises:
        ArithmeticError: LAPACK did not converge.
    """
    n = c.shape[0]
    w = np.empty(n, dtype=np.float64)
    lwork = max(1, 66 * n)  # (block size + 2)·n is optimal for dsytrd's block size ≤ 64
    work = np.empty(lwork, dtype=np.float64)
    info = ctypes.c_int(0)
    _dsyev(
        b"N",
        b"U",
        ctypes.byref(ctypes.c_int(n)),
        _ptr(c),
        ctypes.byref(ctypes.c_int(n)),
        _ptr(w),
        _ptr(work),
        ctypes.byref(ctypes.c_int(lwork)),
        ctypes.byref(info),
    )
    if info.value != 0:
        raise ArithmeticError(f"LAPACK dsyev failed with info={info.value}")
    return w
