"""minimize(distributed=...) on torch.distributed: two gloo processes on 127.0.0.1.

One launch of two worker processes runs every case (``distributed_torch_cases``);
the parent holds the TCPStore on a port the OS picked (port 0), so tests
running in parallel never clash. Every wait is bounded: the process group's
timeout (60 s) inside, the subprocess timeout (120 s) outside.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import distributed_problems as problems  # noqa: E402
import distributed_torch_cases as cases  # noqa: E402

from dict_minimize.core.distributed import LockstepError, RankFailed, point_hash  # noqa: E402
from dict_minimize.torch_api import minimize  # noqa: E402

SIZE = 2
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COMPARED = ["lbfgsb", "jac_true", "jac_callable", "trust_krylov", "slsqp", "nelder_mead", "callback_stop",
            "stochastic", "fd_2point", "hessp_user", "trust_constr"]
FAULTS = ["raise_rank1", "callback_raise", "bad_x0", "drift", "max_time"]


def launch(case_names: list[str], tmp: Path, size: int = SIZE, returncodes: tuple = (0, 0)) -> list:
    """Run the cases on ``size`` worker processes; each rank's results (None where it wrote none)."""
    store = dist.TCPStore("127.0.0.1", 0, size + 1, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=60))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    outs = [tmp / f"rank{r}.pkl" for r in range(size)]
    procs = [
        subprocess.Popen([sys.executable, str(TESTS / "distributed_torch_cases.py"), str(r), str(size),
                          str(store.port), str(outs[r]), *case_names],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(size)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == returncodes[r], f"rank {r} exited with {p.returncode}:\n{log}"
    results = []
    for out in outs:
        if out.exists():
            with open(out, "rb") as f:
                results.append(pickle.load(f))
        else:
            results.append(None)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return launch(COMPARED + FAULTS, tmp_path_factory.mktemp("torch_dist"))


def reference(case: str):
    X, y = problems.data()
    return cases.summary(cases.run_case(case, X, y, 0, None))


def _ok(rank_results: dict, case: str) -> dict:
    got = rank_results[case]
    assert "result" in got, got.get("trace")
    return got["result"]


@pytest.mark.parametrize("case", COMPARED)
def test_identical_on_every_rank(ranks, case):
    r0, r1 = (_ok(r, case) for r in ranks)
    assert r0["x"].tobytes() == r1["x"].tobytes()
    for key in ("fun", "nit", "nfev", "njev", "nhev", "status", "message", "success"):
        assert r0[key] == r1[key], key
    assert r0["history_time"].tobytes() == r1["history_time"].tobytes()  # rank 0's clock
    assert r0["distributed"] == r1["distributed"]


@pytest.mark.parametrize("case", COMPARED)
def test_same_as_one_process_on_all_the_data(ranks, case):
    got, ref = _ok(ranks[0], case), reference(case)
    assert got["nit"] == ref["nit"]
    assert got["nfev"] == ref["nfev"]
    # Finite differences divide the shards' rounding (1e-17) by their step (1e-8): the
    # gradients differ by ~1e-9 and the points SciPy stops at by ~1e-7.
    atol = 1e-6 if case == "fd_2point" else 1e-10
    np.testing.assert_allclose(got["x"], ref["x"], rtol=0, atol=atol)
    assert got["fun"] == pytest.approx(ref["fun"], rel=1e-12, abs=1e-14)
    assert got["success"] == ref["success"]


def test_one_allreduce_of_n_plus_3_floats_per_evaluation(ranks):
    got = _ok(ranks[0], "lbfgsb")
    n = problems.N_FEATURES + 1
    info = got["distributed"]
    # handshake + one per evaluation + the result's clock
    assert info["allreduce_calls"] == got["nfev"] + 2
    evaluations_bytes = info["bytes"] - 8 * 3 - 8 * (len(got["history_time"]) + 3)
    assert evaluations_bytes == got["nfev"] * 8 * (n + 3)


def test_callback_stop_is_decided_once(ranks):
    r0, r1 = (_ok(r, "callback_stop") for r in ranks)
    assert r0["nit"] == r1["nit"] == 3
    assert not r0["success"] and "callback" in r0["message"]


def test_a_rank_raising_ends_every_rank(ranks):
    r0, r1 = ranks[0]["raise_rank1"], ranks[1]["raise_rank1"]
    assert r1["error"] == "ValueError" and "bad shard on rank 1" in r1["message"]
    assert r0["error"] == RankFailed.__name__ and r0["rank_attr"] == 1
    assert "rank 1" in r0["message"]


def test_a_callback_raising_on_rank0_ends_every_rank(ranks):
    r0, r1 = ranks[0]["callback_raise"], ranks[1]["callback_raise"]
    assert r0["error"] == "KeyError"
    assert r1["error"] == RankFailed.__name__ and r1["rank_attr"] == 0


def test_different_x0_is_an_error_on_every_rank(ranks):
    for r in ranks:
        assert r["bad_x0"]["error"] == LockstepError.__name__
        assert "x0" in r["bad_x0"]["message"]


def test_drifting_iterates_are_caught(ranks):
    for r in ranks:
        assert r["drift"]["error"] == LockstepError.__name__, r["drift"]


def test_max_time_is_rank0s_decision(ranks):
    r0, r1 = (_ok(r, "max_time") for r in ranks)
    assert "time limit" in r0["message"] and not r0["success"]
    assert r0["x"].tobytes() == r1["x"].tobytes() and r0["nit"] == r1["nit"]
    # The best point evaluated: the first evaluation is x0, every later one no worse.
    ref = reference("lbfgsb")
    assert r0["fun"] >= ref["fun"]


def test_a_rank_that_dies_fails_the_others_within_the_timeout(tmp_path):
    """No exception to share: rank 0 gets gloo's error (peer gone or the group's 5 s timeout)."""
    r0, r1 = launch(["rank1_dies"], tmp_path, returncodes=(0, 3))
    assert r1 is None
    assert r0["rank1_dies"]["error"] in ("RuntimeError", "DistBackendError", "DistNetworkError")


def test_without_a_process_group_is_a_clear_error():
    if dist.is_initialized():  # pragma: no cover - not in this process
        pytest.skip("a process group is initialized here")
    with pytest.raises(RuntimeError, match="init_process_group"):
        minimize(lambda x: (x**2).sum(), torch.ones(2), distributed=True)


def test_bad_distributed_and_callback_rank_arguments():
    with pytest.raises(TypeError, match="callback_rank"):
        minimize(lambda x: (x**2).sum(), torch.ones(2), callback_rank=0)


def test_point_hash_sees_every_bit():
    x = np.linspace(-1, 1, 1000)
    y = x.copy()
    y[517] = np.nextafter(y[517], 2.0)
    assert point_hash(x) != point_hash(y)
    assert point_hash(x) == point_hash(x.copy())
    assert float(point_hash(x)).is_integer() and 0 <= point_hash(x) < 2**40


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and dist.is_nccl_available()),
                    reason="needs a CUDA device and NCCL")
def test_nccl_one_process_group_on_gpu(tmp_path):  # pragma: no cover - no GPU in CI
    script = tmp_path / "nccl_worker.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "from datetime import timedelta\n"
        "from dict_minimize.torch_api import minimize\n"
        "store = dist.TCPStore('127.0.0.1', int(sys.argv[1]), 1, is_master=False,\n"
        "                      timeout=timedelta(seconds=60))\n"
        "dist.init_process_group('nccl', store=store, rank=0, world_size=1, timeout=timedelta(seconds=60))\n"
        "torch.cuda.set_device(0)\n"
        "x0 = {'a': torch.zeros(3, device='cuda', dtype=torch.float64)}\n"
        "res = minimize(lambda x: ((x['a'] - 1.5) ** 2).sum(), x0, method='L-BFGS-B', distributed=True)\n"
        "assert res.x['a'].device.type == 'cuda'\n"
        "assert torch.allclose(res.x['a'].cpu(), torch.full((3,), 1.5, dtype=torch.float64))\n"
        "dist.destroy_process_group()\n"
    )
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=60))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(store.port)], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _launch_example(script: Path, argv: list[str]) -> tuple[list, list[str]]:
    """The example on SIZE processes, with the variables torchrun sets."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(SIZE):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(r), WORLD_SIZE=str(SIZE), LOCAL_RANK=str(r),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        if os.path.exists("/sys/class/net/lo"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen([sys.executable, str(script), *argv], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    try:
        logs.append(procs[0].communicate(timeout=120)[0])
        if procs[0].returncode != 0:  # rank 0 could not start the store: the others would wait for it
            for p in procs[1:]:
                p.kill()
        logs += [p.communicate(timeout=120)[0] for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return procs, logs


def test_example_on_two_processes_matches_one_process():
    """examples/distributed_torch.py as torchrun starts it (env:// variables), at reduced size."""
    script, argv = ROOT / "examples" / "distributed_torch.py", ["--samples", "4000", "--features", "20"]
    for attempt in range(3):  # rank 0's store binds the port itself: another test may take it first
        procs, logs = _launch_example(script, argv)
        if all(p.returncode == 0 for p in procs) or not any("already in use" in log.lower() for log in logs):
            break
    assert all(p.returncode == 0 for p in procs), logs
    printed = dict(item.split("=") for item in logs[0].strip().splitlines()[-1].split(", "))
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import distributed_torch as example

        one = example.main(argv)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    assert printed["processes"] == "2" and one["processes"] == 1
    assert int(printed["nit"]) == one["nit"] and int(printed["nfev"]) == one["nfev"]
    assert float(printed["fun"]) == pytest.approx(one["fun"], rel=1e-5)  # printed to 6 digits
    assert float(printed["accuracy"]) == one["accuracy"] > 0.85
    assert printed["bytes_per_evaluation"] == str(8 * (20 + 1 + 3))


def test_benchmark_quick_run_compares_equal_work(tmp_path):
    """benchmarks/distributed.py --quick: every side did the same evaluations (no timing asserted)."""
    import json

    out = tmp_path / "distributed.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--quick", "--repeats", "1",
            "--guard-sizes", "51", "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    p1, p2 = report["rows"]
    assert p1["nfev"] == p2["nfev"] == p1["by_hand_nfev"] == p2["by_hand_nfev"] > 10
    assert p2["bytes_per_eval"] == 8 * (report["features"] + 1 + 3)
    run = report["raw"]["2"]["runs"][0]
    assert run["allreduce_calls"] == run["nfev"] + 2  # handshake, one per evaluation, the result
    assert "| 2 | " in done.stdout and "drift guard" in done.stdout
