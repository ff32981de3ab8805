"""minimize on several JAX devices and processes.

(a) One process, two host devices (``--xla_force_host_platform_device_count=2``
in a subprocess): data sharded with ``NamedSharding`` works unchanged.
(b) Two processes joined by ``jax.distributed`` on 127.0.0.1 with gloo CPU
collectives, ``distributed=True``: SciPy in lockstep on every process.
Every wait is bounded (the subprocess timeout, 120 s).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import distributed_jax_cases as cases  # noqa: E402
import distributed_problems as problems  # noqa: E402

from dict_minimize.core.distributed import LockstepError, RankFailed  # noqa: E402
from dict_minimize.jax_api import minimize  # noqa: E402

SIZE = 2
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COMPARED = ["lbfgsb", "jac_true", "trust_krylov", "slsqp", "nelder_mead", "callback_stop"]
FAULTS = ["trace_error_rank1", "raise_rank1", "bad_x0", "drift", "max_time"]


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", **extra,
                PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _free_port() -> int:
    # JAX's coordinator binds the port itself: take one the OS just handed out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(Exception):
    """The coordinator's port was taken between picking it and binding it: try another."""


def _run(procs: list, outs: list[Path]) -> list:
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode != 0 for p in procs) and any("already in use" in log.lower() for log in logs):
        raise PortTaken
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {r} exited with {p.returncode}:\n{log}"
    results = []
    for out in outs:
        with open(out, "rb") as f:
            results.append(pickle.load(f))
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jax_dist")
    outs = [tmp / f"rank{r}.pkl" for r in range(SIZE)]
    for attempt in range(3):  # another test may grab the port before the coordinator binds it
        port = _free_port()
        procs = [
            subprocess.Popen([sys.executable, str(TESTS / "distributed_jax_cases.py"), "ranks", str(r),
                              str(SIZE), str(port), str(outs[r]), *COMPARED, *FAULTS],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(SIZE)
        ]
        try:
            return _run(procs, outs)
        except PortTaken:
            if attempt == 2:
                raise


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("jax_sharded") / "sharded.pkl"
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(TESTS / "distributed_jax_cases.py"), "sharded", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return _run([proc], [out])[0]


def reference(case: str) -> dict:
    with jax.enable_x64(True):
        X, y = problems.data()
        return cases.summary(cases.run_case(case, X, y, 0, None))


def _ok(rank_results: dict, case: str) -> dict:
    got = rank_results[case]
    assert "result" in got, got.get("trace")
    return got["result"]


@pytest.mark.parametrize("case", COMPARED)
def test_identical_on_every_process(ranks, case):
    r0, r1 = (_ok(r, case) for r in ranks)
    assert r0["x"].tobytes() == r1["x"].tobytes()
    for key in ("fun", "nit", "nfev", "njev", "nhev", "status", "message", "success"):
        assert r0[key] == r1[key], key
    assert r0["history_time"].tobytes() == r1["history_time"].tobytes()
    assert r0["distributed"] == r1["distributed"]


@pytest.mark.parametrize("case", COMPARED)
def test_same_as_one_process_on_all_the_data(ranks, case):
    got, ref = _ok(ranks[0], case), reference(case)
    assert got["nit"] == ref["nit"]
    assert got["nfev"] == ref["nfev"]
    np.testing.assert_allclose(got["x"], ref["x"], rtol=0, atol=1e-10)
    assert got["fun"] == pytest.approx(ref["fun"], rel=1e-12, abs=1e-14)


def test_callback_stop_is_decided_once(ranks):
    assert _ok(ranks[0], "callback_stop")["nit"] == _ok(ranks[1], "callback_stop")["nit"] == 3


@pytest.mark.parametrize("case", ["trace_error_rank1", "raise_rank1"])
def test_a_process_raising_ends_every_process(ranks, case):
    r0, r1 = ranks[0][case], ranks[1][case]
    assert r1["error"] == "ValueError" and "rank 1" in r1["message"]
    assert r0["error"] == RankFailed.__name__ and r0["rank_attr"] == 1


def test_different_x0_and_drift_are_errors_everywhere(ranks):
    for r in ranks:
        assert r["bad_x0"]["error"] == LockstepError.__name__
        assert r["drift"]["error"] == LockstepError.__name__, r["drift"]


def test_without_jax_distributed_is_a_clear_error():
    if jax.distributed.is_initialized():  # pragma: no cover
        pytest.skip("jax.distributed is initialized in this process")
    with pytest.raises(RuntimeError, match="jax.distributed.initialize"):
        minimize(lambda x: (x**2).sum(), np.ones(2, np.float32), distributed=True)
    with pytest.raises(TypeError, match="distributed"):
        minimize(lambda x: (x**2).sum(), np.ones(2, np.float32), distributed="all")


def test_sharded_data_over_two_devices_works_unchanged(sharded):
    assert sharded["n_devices"] == 2 and sharded["X_devices"] == 2
    for method in ("L-BFGS-B", "trust-krylov"):
        got, ref = sharded[f"sharded/{method}"], sharded[f"plain/{method}"]
        assert got["nit"] == ref["nit"] and got["nfev"] == ref["nfev"]
        np.testing.assert_allclose(got["x"], ref["x"], rtol=0, atol=1e-10)
        assert got["success"]


def test_max_time_is_rank0s_decision(ranks):
    r0, r1 = (_ok(r, "max_time") for r in ranks)
    assert "time limit" in r0["message"] and not r0["success"]
    assert r0["x"].tobytes() == r1["x"].tobytes() and r0["fun"] == r1["fun"]
    np.testing.assert_array_equal(r0["x"], np.zeros(problems.N_FEATURES + 1))  # x0: the only point evaluated
