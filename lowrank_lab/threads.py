"""Thread limits for linear algebra that never leak into other threads or outlive their scope.

The app serves several sessions from one process, and a LoRA fine-tune trains in a thread of
its own. ``torch.set_num_threads`` is process-wide in effect: besides the calling thread's
OpenMP and MKL settings it sets the default every *new* thread starts from, and Streamlit
runs every script run in a new thread. Two sessions saving and restoring it around their
work can interleave (A saves 2 and sets 1, B saves 1, A restores 2, B restores 1) and leave
every later thread on one core. So:

- :func:`one_lapack_thread` sets only the *calling* thread's OpenMP and MKL thread counts
  (both are per-thread settings underneath ``torch.set_num_threads``) and restores them; no
  other thread sees a change.
- :func:`shared_blas_limit` limits NumPy's and SciPy's OpenBLAS, which has one process-wide
  setting, for as long as any caller needs it: the first to enter sets it, the last to leave
  restores it, so overlapping callers cannot leave it changed. Both happen on one long-lived
  thread of ours: threadpoolctl lets only the thread that last set OpenBLAS change it while
  that thread lives, so a restore from another session's thread would be ignored.

Why one LAPACK thread at all: on a shared two-core machine torch's two-thread pool makes
float64 SVD, Cholesky and eigh wait on each other while another process holds a core
(``bench/threads.py`` measures it).
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _thread_controls():
    """(omp_get_max_threads, omp_set_num_threads, mkl_set_num_threads_local) of torch's own libraries, or None."""
    lib = Path(torch.__file__).parent / "lib"
    try:
        gomp = ctypes.CDLL(str(next(lib.glob("libgomp*.so*"))))
        omp_get, omp_set = gomp.omp_get_max_threads, gomp.omp_set_num_threads
        omp_get.restype, omp_get.argtypes = ctypes.c_int, []
        omp_set.restype, omp_set.argtypes = None, [ctypes.c_int]
    except (StopIteration, OSError, AttributeError):
        return None  # a torch built without GNU OpenMP: leave its threads alone
    mkl_local = None
    try:
        cpu = ctypes.CDLL(str(lib / "libtorch_cpu.so"))
        fortran = cpu.mkl_set_num_threads_local_  # the by-reference entry point, unambiguous
        fortran.restype, fortran.argtypes = ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]

        def mkl_local(n: int) -> int:
            return fortran(ctypes.byref(ctypes.c_int(n)))

    except (OSError, AttributeError):
        pass  # torch without MKL: OpenMP alone sets its threads
    return omp_get, omp_set, mkl_local


@contextmanager
def one_lapack_thread() -> Iterator[None]:
    """Run torch's CPU linear algebra on one thread, in the calling thread only.

    Other threads, and threads started meanwhile, keep their own thread counts. Where the
    per-thread controls cannot be found the counts are left as they are (slower, still right).
    """
    torch.get_num_threads()  # torch sets a thread's counts on first use: do it now, not inside
    controls = _thread_controls()
    if controls is None:
        yield
        return
    omp_get, omp_set, mkl_local = controls
    before = omp_get()
    omp_set(1)
    mkl_before = mkl_local(1) if mkl_local is not None else None
    try:
        yield
    finally:
        omp_set(before)
        if mkl_local is not None:
            mkl_local(mkl_before)  # 0 means "no thread-local setting", as it was


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_blas_control = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lowrank-blas-control")


@contextmanager
def shared_blas_limit(limit: int = 1) -> Iterator[None]:
    """Limit NumPy's and SciPy's BLAS to ``limit`` threads while any caller is inside.

    OpenBLAS has one process-wide thread count, so overlapping callers share one limit: the
    first to enter sets it, the last to leave restores it.
    """
    global _blas_users, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_control.submit(threadpool_limits, limits=limit, user_api="blas").result()
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_control.submit(_blas_limiter.restore_original_limits).result()
                _blas_limiter = None


def ordered_map(calls: Iterable[tuple[Callable, tuple]], workers: int) -> Iterator:
    """Run ``fn(*args)`` for each ``(fn, args)`` on ``workers`` threads (one BLAS thread each); yield the results in order.

    ``calls`` is drawn lazily in the calling thread (so reading the next inputs overlaps the
    work), and at most ``workers`` + 1 calls are in flight: their inputs are all that is held.
    With one worker everything runs in the calling thread.
    """
    if workers <= 1:
        for fn, args in calls:
            yield fn(*args)
        return
    pending: deque[Future] = deque()
    with shared_blas_limit(1), ThreadPoolExecutor(workers) as pool:
        try:
            for fn, args in calls:
                pending.append(pool.submit(fn, *args))
                while len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for job in pending:
                job.cancel()
