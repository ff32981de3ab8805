"""Paired check of SciPy's own case: ``numpy_api.minimize`` on a flat ndarray vs SciPy.

``overhead.py`` times every case with a few pairs of runs; at a 1.05x
target on a noisy machine that may not settle it. This runs many short
interleaved rounds (ABBA order) of the same L-BFGS-B run (chained
Rosenbrock, the analytic gradient, ``jac=True``, zero tolerances so every
side stops on ``maxiter``), one thread, in each of several fresh processes.
Each round times SciPy and two variants of the drop-in: the default (in
SciPy's own case no ``res.history``: SciPy's loop with no callback) and
``history=True`` (which records one, a callback row per iteration).

Pairs in one process share its memory layout and caches, so they are not
independent of each other; processes are. The verdict therefore treats
each process's median ratio as one observation: the sign test's 95%
interval for the median over processes (``_common.median_ci``; with six
processes or fewer, their whole range). Each process's own interval over
its pairs is printed too, in wall and in CPU time.

Usage::

    python benchmarks/dropin_pairs.py                       # n = 1e3, 6 processes x 40 rounds
    python benchmarks/dropin_pairs.py --n 2,10,100,1000,10000,100000,1000000 \
        --json benchmarks/results/dropin_pairs.json         # the README's table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # measure this checkout

import _common  # noqa: E402
from _common import median_ci  # noqa: E402
from dict_minimize import numpy_api  # noqa: E402

#: The issue's target for a flat ndarray x0 against SciPy itself, at every size.
TARGET = 1.05


def rosen_value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
    """The chained Rosenbrock function and its gradient."""
    a, b = x[:-1], x[1:]
    t, u = b - a * a, 1 - a
    g = np.zeros_like(x)
    g[:-1] = -400 * t * a - 2 * u
    g[1:] += 200 * t
    return float(np.sum(100 * t * t + u * u)), g


#: The drop-in's two variants, each timed against SciPy in the same interleaved run: the
#: default (SciPy's loop without a callback) and ``history=True`` (a row recorded per iteration).
VARIANTS = {"": {}, "_history": {"history": True}}


def pairs_here(n: int, pairs: int, maxiter: int) -> dict:
    """Time ``pairs`` interleaved rounds in this process; per-round ratios of each variant to SciPy."""
    x0 = np.random.default_rng(0).uniform(-2.0, 2.0, n)
    options = {"maxiter": maxiter, "ftol": 0.0, "gtol": 0.0}
    sides = {
        f"numpy_api{suffix}": (lambda extra=extra: numpy_api.minimize(
            rosen_value_and_grad, x0, jac=True, method="L-BFGS-B", options=options, **extra))
        for suffix, extra in VARIANTS.items()
    }
    sides["scipy"] = lambda: scipy.optimize.minimize(rosen_value_and_grad, x0, jac=True, method="L-BFGS-B",
                                                     options=options)
    results = {name: run() for name, run in sides.items()}  # warm-up; every side must do the same work
    counts = sorted({(int(r.nit), int(r.nfev)) for r in results.values()})
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for i in range(pairs):
        for name in (order if i % 2 == 0 else order[::-1]):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            sides[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    out = {"counts": counts, "scipy_median_s": statistics.median(wall["scipy"])}
    for suffix in VARIANTS:
        out[f"wall{suffix}"] = [a / b for a, b in zip(wall[f"numpy_api{suffix}"], wall["scipy"])]
        out[f"cpu{suffix}"] = [a / b for a, b in zip(cpu[f"numpy_api{suffix}"], cpu["scipy"])]
    return out


def verdict(low: float, high: float) -> str:
    """Where an interval lies against the target."""
    return "within" if high <= TARGET else "over" if low > TARGET else "not settled"


def summarize(processes: list[dict], variant: str = "") -> dict:
    """Per-process medians and intervals; the verdict on the median over processes.

    ``variant``: ``""`` (the default drop-in) or ``"_history"`` (see :data:`VARIANTS`).
    """
    per_process = []
    for proc in processes:
        row = {"counts": proc["counts"], "scipy_median_s": proc["scipy_median_s"]}
        for clock in ("wall", "cpu"):
            row[clock] = statistics.median(proc[clock + variant])
            row[f"{clock}_ci95"] = median_ci(proc[clock + variant])
        per_process.append(row)
    medians = [row["wall"] for row in per_process]
    low, high = median_ci(medians)
    return {
        "per_process": per_process,
        "median": statistics.median(medians),
        "ci95": (low, high),
        "comparable": all(len(row["counts"]) == 1 for row in per_process),
        "verdict": verdict(low, high),
    }


def report(data: dict) -> str:
    """The summary as Markdown: one row per size, each variant's verdict on the median over processes."""
    header = ["n", "iterations", "evaluations", "rounds x processes", "SciPy run ms",
              "default ratio", "default 95% interval", "default verdict",
              "history=True ratio", "history=True 95% interval", "history=True verdict"]
    rows = []
    for size in data["sizes"]:
        row = None
        for variant in VARIANTS:
            s = summarize(size["processes"], variant)
            if row is None:
                nit, nfev = s["per_process"][0]["counts"][0]
                scipy_ms = statistics.median(1e3 * r["scipy_median_s"] for r in s["per_process"])
                row = [size["n"], nit, nfev, f"{size['pairs']} x {len(s['per_process'])}", f"{scipy_ms:.1f}"]
            row += [f"{s['median']:.3f}", f"{s['ci95'][0]:.3f}-{s['ci95'][1]:.3f}", f"{s['verdict']} {TARGET}x"]
        rows.append(row)
    right = [h for h in header if not h.endswith("verdict")]
    return _common.markdown_table(header, rows, right=right)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1000", help="problem sizes, comma-separated (default 1000)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="interleaved pairs per process (default 40, 10 at n >= 1e5)")
    parser.add_argument("--processes", type=int, default=6, help="fresh processes per size (default 6)")
    parser.add_argument("--maxiter", type=int, default=None,
                        help="iterations per run (default 200, 20 at n >= 1e5)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw ratios here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(float(v)) for v in args.n.split(",")]
    if args.worker:
        print(json.dumps(pairs_here(sizes[0], args.pairs, args.maxiter)))
        return 0
    runs = []
    for n in sizes:
        pairs = args.pairs or (40 if n < 100_000 else 10)
        maxiter = args.maxiter or (200 if n < 100_000 else 20)
        worker = [sys.executable, __file__, "--worker", "--n", str(n), "--pairs", str(pairs),
                  "--maxiter", str(maxiter)]
        env = {**os.environ, **_common.thread_env(1)}
        processes = [
            json.loads(subprocess.run(worker, env=env, capture_output=True, text=True, check=True,
                                      timeout=3600).stdout)
            for _ in range(args.processes)
        ]
        if not summarize(processes)["comparable"]:
            print(f"n={n}: the two sides differ: {[p['counts'] for p in processes]}", file=sys.stderr)
            return 1
        runs.append({"n": n, "pairs": pairs, "maxiter": maxiter, "processes": processes})
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    data = {"date": date, "machine": _common.machine(), "command": _common.command_line(), "sizes": runs}
    print(report(data))
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    # The target is the default's; history=True is measured to say what the record costs.
    over = any(summarize(r["processes"])["verdict"] == "over" for r in runs)
    return 2 if over else 0


if __name__ == "__main__":
    sys.exit(main())
