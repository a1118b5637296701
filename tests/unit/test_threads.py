"""Thread limits stay in their thread and their scope, however sessions interleave."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from lowrank_lab.compress.factorize import lapack_thread
from lowrank_lab.threads import one_lapack_thread, shared_blas_limit


def _in_new_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_the_lapack_limit_is_one_thread_inside_and_nowhere_else():
    default = torch.get_num_threads()
    with lapack_thread():
        assert torch.get_num_threads() == 1
        assert _in_new_thread(torch.get_num_threads) == default  # a session started meanwhile
        w = torch.randn(64, 48, dtype=torch.float64)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        assert torch.allclose(u * s @ vh, w)
    assert torch.get_num_threads() == default
    assert _in_new_thread(torch.get_num_threads) == default


def test_interleaved_sessions_leave_every_thread_as_it_was():
    """A enters, B enters, A leaves, B leaves: the order that broke a save-and-restore of set_num_threads."""
    default = torch.get_num_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def session_a():
        with one_lapack_thread():
            a_in.set()
            b_in.wait(10)
            seen["a inside"] = torch.get_num_threads()
        a_out.set()
        seen["a after"] = torch.get_num_threads()

    def session_b():
        a_in.wait(10)
        with one_lapack_thread():
            b_in.set()
            a_out.wait(10)
            seen["b inside"] = torch.get_num_threads()
        seen["b after"] = torch.get_num_threads()

    threads = [threading.Thread(target=session_a), threading.Thread(target=session_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a inside": 1, "b inside": 1, "a after": default, "b after": default}
    assert _in_new_thread(torch.get_num_threads) == default
    assert torch.get_num_threads() == default


def test_the_shared_blas_limit_is_restored_only_when_the_last_user_leaves():
    """A enters, B enters, A leaves, B leaves while A's thread still lives (threadpoolctl then
    ignores a restore from B's thread unless one thread of ours makes every change)."""
    before = _blas_threads()
    a_in, b_in, a_out, b_out = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def session_a():
        with shared_blas_limit(1):
            a_in.set()
            b_in.wait(10)
        a_out.set()
        b_out.wait(10)  # alive until B has left

    def session_b():
        a_in.wait(10)
        with shared_blas_limit(1):
            b_in.set()
            a_out.wait(10)
            seen["b inside, a gone"] = _blas_threads()
            seen["svd"] = np.linalg.svd(np.eye(3))[1].tolist()
        seen["b after"] = _blas_threads()
        b_out.set()

    threads = [threading.Thread(target=session_a), threading.Thread(target=session_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(seen["b inside, a gone"]) == {1}  # A leaving did not lift B's limit
    assert seen["svd"] == [1.0, 1.0, 1.0]
    assert seen["b after"] == before  # B leaving restored the original counts, A's thread alive
    assert _blas_threads() == before


def test_ordered_map_keeps_order_bounds_what_is_in_flight_and_raises():
    import threading
    import time

    from lowrank_lab.threads import ordered_map

    drawn, done, lock = [], [], threading.Lock()

    def work(i):
        time.sleep(0.01 * (i % 3))  # finish out of order
        with lock:
            done.append(i)
        return i * i

    def calls():
        for i in range(12):
            with lock:
                assert len(drawn) - len(done) <= 3  # at most workers + 1 drawn and not finished
                drawn.append(i)
            yield work, (i,)

    assert list(ordered_map(calls(), 2)) == [i * i for i in range(12)]
    assert list(ordered_map(((work, (i,)) for i in range(4)), 1)) == [0, 1, 4, 9]

    def boom(i):
        if i == 3:
            raise ValueError("matrix 3 is broken")
        return i

    with pytest.raises(ValueError, match="matrix 3"):
        list(ordered_map(((boom, (i,)) for i in range(8)), 2))
