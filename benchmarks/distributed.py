"""Data-parallel minimize on torch.distributed (gloo, 127.0.0.1): time per evaluation and scaling.

Fixed total data (logistic regression, N samples x d features, float64),
split over p = 1, 2 processes; full-batch L-BFGS-B to convergence (the same
iterates, so the same evaluations, for every p). Reported per p:

- seconds per evaluation (wall time of ``minimize`` / nfev, best of the repeats);
- scaling efficiency ``T1 / (p * Tp)``, T1 the one-process run without
  ``distributed=`` (the baseline a user has today);
- communication share: rank 0's seconds inside the fused all-reduce
  (waiting for the slower rank included) over the wall time;
- bytes per evaluation: the fused buffer, ``8 (n + 3)``;
- the alternative a user would write by hand: ``torch.optim.LBFGS`` (strong
  Wolfe line search) whose closure all-reduces the loss and each gradient
  with ``dist.all_reduce``, run for the same number of evaluations;
- the drift guard: the hash carried in the fused buffer against a rank-0
  broadcast of x, per evaluation, at several n.

Usage::

    python benchmarks/distributed.py            # full size
    python benchmarks/distributed.py --quick    # small, for a smoke run

Raw output: ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "distributed.json"


# ---- worker ---------------------------------------------------------------

def _worker(opts) -> None:
    from datetime import timedelta

    import numpy as np
    import torch
    import torch.distributed as dist

    from dict_minimize.core.distributed import point_hash
    from dict_minimize.torch_api import minimize

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank, size = dist.get_rank(), dist.get_world_size()
    N, d = opts.samples, opts.features
    rng = np.random.default_rng(0)
    # Features on scales 1 to 1/30: an ill-conditioned problem that takes L-BFGS-B ~100 evaluations.
    X = rng.standard_normal((N, d)) * np.geomspace(1.0, 1 / 30, d)
    y = np.where(X @ (rng.standard_normal(d) / np.sqrt(d)) + 0.3 * rng.standard_normal(N) > 0, 1.0, -1.0)
    mine = np.array_split(np.arange(N), size)[rank]
    Xl, yl = torch.as_tensor(X[mine]), torch.as_tensor(y[mine])
    del X, y
    lam = 1e-6

    def loss(p, X, y):
        data = torch.nn.functional.softplus(-(y * (X @ p["w"] + p["b"]))).sum() / N
        return data + 0.5 * lam * (p["w"] ** 2).sum() if rank == 0 else data

    def x0():
        return {"w": torch.zeros(d, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}

    def ours(distributed):
        kw = {"distributed": True} if distributed else {}
        dist.barrier()
        t = time.perf_counter()
        res = minimize(loss, x0(), args=(Xl, yl), method="L-BFGS-B", options={"maxiter": 1000}, **kw)
        return time.perf_counter() - t, res

    def by_hand(max_eval):
        """torch.optim.LBFGS, each rank's gradients all-reduced in the closure (what users write)."""
        params = [torch.zeros(d, dtype=torch.float64, requires_grad=True),
                  torch.zeros((), dtype=torch.float64, requires_grad=True)]
        opt = torch.optim.LBFGS(params, lr=1, max_iter=10 * max_eval, max_eval=max_eval, history_size=10,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
        calls = []

        def closure():
            calls.append(1)
            opt.zero_grad()
            f = loss({"w": params[0], "b": params[1]}, Xl, yl)
            f.backward()
            f = f.detach().clone()
            if size > 1:
                for p in params:
                    dist.all_reduce(p.grad)
                dist.all_reduce(f)
            return f

        dist.barrier()
        t = time.perf_counter()
        opt.step(closure)
        return time.perf_counter() - t, len(calls), float(closure())

    out = {"rank": rank, "size": size, "runs": []}
    # The first run warms up gloo's connections and torch's allocator, and counts the evaluations.
    nfev = int(ours(size > 1)[1].nfev)
    for repeat in range(opts.repeats):
        run = {}
        sides = ["ours", "hand"] + (["ours_p1_distributed"] if size == 1 else [])
        for side in sides if repeat % 2 == 0 else sides[::-1]:  # ABBA: drift of the machine weighs alike
            if side == "hand":
                hand_wall, hand_evals, hand_fun = by_hand(nfev)
                run.update(hand_wall=hand_wall, hand_nfev=hand_evals, hand_fun=hand_fun)
            elif side == "ours":
                wall, res = ours(size > 1)
                run.update(wall=wall, nfev=int(res.nfev), nit=int(res.nit), fun=float(res.fun))
                if "distributed" in res:
                    run.update(comm_seconds=res.distributed["comm_seconds"], bytes=res.distributed["bytes"],
                               allreduce_calls=res.distributed["allreduce_calls"])
            else:  # one process with distributed=True: the wrapper's own cost
                wall_d, res_d = ours(True)
                run.update(wall_distributed_p1=wall_d, nfev_distributed_p1=int(res_d.nfev))
        out["runs"].append(run)

    if size > 1:  # the drift guard: hash in the fused buffer vs a broadcast of x
        guard = []
        for n in opts.guard_sizes:
            x = np.random.default_rng(1).standard_normal(n)
            reps = max(5, min(200, int(2e7 // (8 * n + 1e5))))

            def fused():
                buf = np.zeros(n + 3)
                buf[n + 2] = point_hash(x)
                t = torch.from_numpy(buf)
                dist.all_reduce(t)

            def broadcast():
                t = torch.from_numpy(np.zeros(n + 2))
                dist.all_reduce(t)
                dist.broadcast(torch.from_numpy(x.copy()), src=0)

            def none():
                dist.all_reduce(torch.from_numpy(np.zeros(n + 2)))

            row = {"n": n, "reps": reps, "blocks": 5}
            sides = (("no_guard", none), ("hash_in_buffer", fused), ("broadcast_x", broadcast))
            times = {name: [] for name, _ in sides}
            for block in range(5):  # interleaved blocks; the least disturbed block counts
                for name, fn in sides if block % 2 == 0 else sides[::-1]:
                    fn()
                    dist.barrier()
                    t = time.perf_counter()
                    for _ in range(reps):
                        fn()
                    times[name].append((time.perf_counter() - t) / reps)
            row.update({name: min(v) for name, v in times.items()})
            t = time.perf_counter()
            for _ in range(reps):
                point_hash(x)
            row["hash_only"] = (time.perf_counter() - t) / reps
            guard.append(row)
        out["guard"] = guard
    if rank == 0:
        Path(opts.out).write_text(json.dumps(out))
    dist.destroy_process_group()


# ---- orchestrator -----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(p: int, opts, tmp: Path, tries: int = 2) -> dict:
    """Run the p-process measurement; once more on a new port if a worker fails.

    The port is free when picked but another process may bind it before the
    workers do (the window every free-port choice has).
    """
    for attempt in range(tries):
        try:
            return _launch_once(p, opts, tmp)
        except RuntimeError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _launch_once(p: int, opts, tmp: Path) -> dict:
    out = tmp / f"p{p}.json"
    port = _free_port()
    argv = [sys.executable, __file__, "--worker", "--out", str(out), "--samples", str(opts.samples),
            "--features", str(opts.features), "--repeats", str(opts.repeats),
            "--guard-sizes", ",".join(map(str, opts.guard_sizes))]
    procs = []
    for r in range(p):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(p), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        if os.path.exists("/sys/class/net/lo"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen(argv, env=env))
    for proc in procs:
        if proc.wait(timeout=1800) != 0:
            raise RuntimeError(f"a worker of the p={p} run failed")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--guard-sizes", default=None)
    parser.add_argument("--json", default=str(RESULTS))
    opts = parser.parse_args()
    opts.samples = opts.samples or (20_000 if opts.quick else 200_000)
    opts.features = opts.features or (20 if opts.quick else 50)
    opts.repeats = opts.repeats or (1 if opts.quick else 3)
    guard_sizes = opts.guard_sizes or ("51,10000" if opts.quick else "51,10000,1000000")
    opts.guard_sizes = [int(v) for v in guard_sizes.split(",")]
    if opts.worker:
        _worker(opts)
        return

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        raw = {p: _launch(p, opts, Path(tmp)) for p in (1, 2)}
    n = opts.features + 1

    def best(p, key):
        """The least disturbed repeat's seconds per evaluation."""
        count = "hand_nfev" if key == "hand_wall" else "nfev"
        return min(r[key] / r[count] for r in raw[p]["runs"])

    t1 = best(1, "wall")
    rows = []
    for p in (1, 2):
        runs = raw[p]["runs"]
        tp = best(p, "wall")
        comm = min((r["comm_seconds"] / r["wall"] for r in runs if "comm_seconds" in r), default=0.0)
        rows.append({
            "p": p, "nfev": runs[0]["nfev"], "nit": runs[0]["nit"], "s_per_eval": tp,
            "efficiency": t1 / (p * tp), "comm_share": comm if p > 1 else None,
            "bytes_per_eval": 8 * (n + 3) if p > 1 else 0,
            "by_hand_s_per_eval": best(p, "hand_wall"), "by_hand_nfev": runs[0]["hand_nfev"],
            "p1_distributed_s_per_eval": (
                min(r["wall_distributed_p1"] / r["nfev_distributed_p1"] for r in runs) if p == 1 else None),
        })
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "samples": opts.samples, "features": opts.features, "repeats": opts.repeats, "quick": opts.quick,
        "rows": rows, "guard": raw[2].get("guard", []), "raw": {str(p): raw[p] for p in raw},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
    report = {"command": "python " + " ".join(["benchmarks/distributed.py"] + sys.argv[1:]), **report}
    Path(opts.json).write_text(json.dumps(report, indent=1))

    print(f"logistic regression, {opts.samples} samples x {opts.features} features (n = {n}), float64, gloo")
    print("| processes | nfev | s / evaluation | efficiency T1/(p Tp) | comm share | bytes / evaluation "
          "| by hand (torch.optim.LBFGS + all_reduce) s / evaluation |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        share = "-" if r["comm_share"] is None else f"{r['comm_share']:.0%}"
        print(f"| {r['p']} | {r['nfev']} | {r['s_per_eval'] * 1e3:.2f} ms | {r['efficiency']:.2f} | {share} "
              f"| {r['bytes_per_eval']} | {r['by_hand_s_per_eval'] * 1e3:.2f} ms |")
    p1_distributed = rows[0]["p1_distributed_s_per_eval"]
    print(f"one process with distributed=True: {p1_distributed * 1e3:.2f} ms / evaluation")
    print("\ndrift guard per evaluation (2 processes):")
    print("| n | all-reduce n+2, no guard | hash in the buffer (n+3) "
          "| all-reduce n+2 + broadcast of x | hash alone |")
    print("|--:|--:|--:|--:|--:|")
    for g in report["guard"]:
        print(f"| {g['n']} | {g['no_guard'] * 1e6:.0f} us | {g['hash_in_buffer'] * 1e6:.0f} us "
              f"| {g['broadcast_x'] * 1e6:.0f} us | {g['hash_only'] * 1e6:.1f} us |")


if __name__ == "__main__":
    main()
