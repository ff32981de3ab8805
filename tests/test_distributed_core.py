"""The framework-agnostic core of distributed=: three ranks as threads, the NumPy backend.

A thread communicator (a barrier, then each rank sums every rank's buffer in
rank order) stands in for gloo; everything else is the code torch_api and
jax_api run. Every barrier wait is bounded (30 s).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dict_minimize.core.distributed import (
    Communicator,
    LockstepError,
    RankFailed,
    Reducer,
    minimize_distributed,
)
from dict_minimize.core.driver import minimize as driver_minimize
from dict_minimize.numpy_api import NumpyBackend
from dict_minimize.numpy_api import minimize as numpy_minimize

SIZE = 3
NUMPY_BACKEND = NumpyBackend()


class ThreadGroup:
    def __init__(self, size: int):
        self.size = size
        self.bufs: list = [None] * size
        self.barrier = threading.Barrier(size, timeout=30)


class ThreadCommunicator(Communicator):
    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank, self.size = group, rank, group.size

    def allreduce_sum(self, buf):
        g = self.group
        g.bufs[self.rank] = np.array(buf, dtype=np.float64)
        g.barrier.wait()
        total = g.bufs[0].copy()
        for other in g.bufs[1:]:
            total += other
        g.barrier.wait()
        return total


def on_ranks(body, size: int = SIZE) -> list:
    """``body(rank, comm)`` on ``size`` threads; each one's result or exception."""
    group = ThreadGroup(size)
    out: list = [None] * size

    def run(rank):
        try:
            out[rank] = body(rank, ThreadCommunicator(group, rank))
        except BaseException as exc:  # noqa: B902 - compared by the test
            out[rank] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return out


RNG = np.random.default_rng(3)
A = RNG.standard_normal((30, 4))
B = RNG.standard_normal(30)
SHARDS = np.array_split(np.arange(30), SIZE)


def least_squares(x, rows):
    """Half the squared residual of ``rows`` and its gradient (jac=True)."""
    r = A[rows] @ x["w"] + x["c"] - B[rows]
    return 0.5 * float(r @ r), {"w": A[rows].T @ r, "c": r.sum()}


def x0():
    return {"w": np.zeros(4), "c": np.zeros(())}


def run_shard(rank, comm, fun=least_squares, start=None, **kw):
    rows = SHARDS[rank]
    return minimize_distributed(driver_minimize, NUMPY_BACKEND, comm, fun, start or x0(), args=(rows,),
                                method="L-BFGS-B", jac=True, **kw)


def test_three_ranks_match_one_process_and_each_other():
    results = on_ranks(run_shard)
    ref = numpy_minimize(least_squares, x0(), args=(np.arange(30),), method="L-BFGS-B", jac=True)
    for res in results:
        assert not isinstance(res, BaseException), res
        assert res.x["w"].tobytes() == results[0].x["w"].tobytes()
        assert (res.nit, res.nfev) == (ref.nit, ref.nfev)
        np.testing.assert_allclose(res.x["w"], ref.x["w"], rtol=0, atol=1e-10)
    assert results[0].distributed["allreduce_calls"] == ref.nfev + 2


def test_the_lowest_failing_rank_is_named():
    def fails_on_1_and_2(x, rows):
        if rows[0] != 0:
            raise ArithmeticError(f"shard starting at {rows[0]}")
        return least_squares(x, rows)

    r0, r1, r2 = on_ranks(lambda rank, comm: run_shard(rank, comm, fails_on_1_and_2))
    assert isinstance(r0, RankFailed) and r0.rank == 1
    assert isinstance(r1, ArithmeticError) and isinstance(r2, ArithmeticError)
    assert "shard starting at 20" in str(r2)


def test_a_different_x0_on_one_rank_is_an_error_on_every_rank():
    def body(rank, comm):
        start = x0()
        if rank == 2:
            start["c"] = np.ones(())
        return run_shard(rank, comm, start=start)

    assert all(isinstance(res, LockstepError) for res in on_ranks(body))


def test_a_different_x0_structure_is_caught_before_any_sized_collective():
    def body(rank, comm):
        start = x0()
        if rank == 1:
            start["w"] = np.zeros(5)
        return run_shard(rank, comm, start=start)

    out = on_ranks(body)
    assert all(isinstance(res, LockstepError) for res in out), out


def test_callbacks_run_where_asked_and_any_stop_stops_all():
    calls = [0] * SIZE

    def body(rank, comm):
        def callback(xk):
            calls[rank] += 1
            if rank == 1 and calls[rank] == 2:
                raise StopIteration

        return run_shard(rank, comm, callback=callback, callback_rank=None)

    out = on_ranks(body)
    assert [res.nit for res in out] == [2, 2, 2] and calls == [2, 2, 2]
    assert all(not res.success for res in out)

    calls = [0] * SIZE

    def on_rank_2(rank, comm):
        def callback(intermediate_result):
            calls[rank] += 1

        return run_shard(rank, comm, callback=callback, callback_rank=2)

    out = on_ranks(on_rank_2)
    assert calls[0] == calls[1] == 0 and calls[2] == out[2].nit > 0


def test_bad_callback_rank():
    out = on_ranks(lambda rank, comm: run_shard(rank, comm, callback_rank=SIZE))
    assert all(isinstance(res, ValueError) and "callback_rank" in str(res) for res in out)


def test_status_of_several_failures_and_rank0_time_limit():
    group = ThreadGroup(SIZE)

    def body(rank, comm):
        reducer = Reducer(comm, deadline=0.0 if rank == 0 else None)  # rank 0's clock has run out

        def compute():
            if rank == 2:
                raise KeyError("two")
            return [float(rank)]

        try:
            return reducer.reduce(compute, 1, check=7.0, where="test")
        except (RankFailed, KeyError) as exc:
            return exc, reducer.time_up

    out = [None] * SIZE
    threads = [threading.Thread(target=lambda r=r: out.__setitem__(r, body(r, ThreadCommunicator(group, r))))
               for r in range(SIZE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(out[0][0], RankFailed) and out[0][0].rank == 2
    assert isinstance(out[2][0], KeyError)


def test_time_limit_decided_on_rank0_keeps_the_best_point():
    out = on_ranks(lambda rank, comm: run_shard(rank, comm, max_time=1e-9))
    for res in out:
        assert not isinstance(res, BaseException), res
        assert "time limit" in res.message and not res.success
        np.testing.assert_array_equal(res.x["w"], np.zeros(4))  # x0: the only point evaluated
    assert out[0].fun == out[1].fun == out[2].fun == pytest.approx(0.5 * float(B @ B))


def test_finite_differences_without_autodiff_are_summed_too():
    def value(x, rows):
        return least_squares(x, rows)[0]

    out = on_ranks(lambda rank, comm: minimize_distributed(
        driver_minimize, NUMPY_BACKEND, comm, value, x0(), args=(SHARDS[rank],), method="L-BFGS-B"))
    ref = numpy_minimize(value, x0(), args=(np.arange(30),), method="L-BFGS-B")
    for res in out:
        assert not isinstance(res, BaseException), res
        assert res.nit == ref.nit
        np.testing.assert_allclose(res.x["w"], ref.x["w"], atol=1e-5)


def test_progress_bar_only_on_the_callback_rank():
    import io

    streams = [io.StringIO() for _ in range(SIZE)]
    out = on_ranks(lambda rank, comm: run_shard(rank, comm, progress={"file": streams[rank]}, callback_rank=1))
    assert all(not isinstance(res, BaseException) for res in out), out
    assert streams[0].getvalue() == streams[2].getvalue() == ""
    assert "l-bfgs-b" in streams[1].getvalue()
