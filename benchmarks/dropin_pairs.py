"""Paired check of SciPy's own case: ``numpy_api.minimize`` on a flat ndarray vs SciPy.

``overhead.py`` takes the median of a few runs per side; at a 1.05x target
on a noisy machine that is not conclusive. This runs many short interleaved
pairs (ABBA order) of the same L-BFGS-B run (chained Rosenbrock, the
analytic gradient, ``jac=True``, zero tolerances so both stop on
``maxiter``) and reports the median of the per-pair ratios with its
interquartile range, in wall time and in the process's CPU time (both
sides run on one thread of this process; on a shared virtual machine the
two can spread differently).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/dropin_pairs.py                # n = 1e3, 60 pairs
    OMP_NUM_THREADS=1 python benchmarks/dropin_pairs.py --n 100000 --pairs 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # measure this checkout

from dict_minimize import numpy_api  # noqa: E402


def rosen_value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
    """The chained Rosenbrock function and its gradient."""
    a, b = x[:-1], x[1:]
    t, u = b - a * a, 1 - a
    g = np.zeros_like(x)
    g[:-1] = -400 * t * a - 2 * u
    g[1:] += 200 * t
    return float(np.sum(100 * t * t + u * u)), g


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="problem size (default 1000)")
    parser.add_argument("--pairs", type=int, default=60, help="interleaved pairs (default 60)")
    parser.add_argument("--maxiter", type=int, default=None, help="iterations per run (default 200, 20 at n >= 1e5)")
    args = parser.parse_args(argv)
    x0 = np.random.default_rng(0).uniform(-2.0, 2.0, args.n)
    options = {"maxiter": args.maxiter or (200 if args.n < 100_000 else 20), "ftol": 0.0, "gtol": 0.0}
    sides = {
        "numpy_api": lambda: numpy_api.minimize(rosen_value_and_grad, x0, jac=True, method="L-BFGS-B", options=options),
        "scipy": lambda: scipy.optimize.minimize(rosen_value_and_grad, x0, jac=True, method="L-BFGS-B", options=options),
    }
    results = {name: run() for name, run in sides.items()}  # warm-up, and the check that both do the same work
    if len({(r.nit, r.nfev) for r in results.values()}) != 1:
        print(f"the two sides differ: {[(r.nit, r.nfev) for r in results.values()]}", file=sys.stderr)
        return 1
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.pairs):
        for name in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            sides[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    nfev = results["scipy"].nfev
    print(f"n={args.n} nit={results['scipy'].nit} nfev={nfev} pairs={args.pairs}: numpy_api/scipy")
    for clock, times in (("wall", wall), ("cpu", cpu)):
        ratios = [a / b for a, b in zip(times["numpy_api"], times["scipy"])]
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        extra = (statistics.median(times["numpy_api"]) - statistics.median(times["scipy"])) / nfev
        print(f"  {clock}: median {median:.3f} (interquartile {q1:.3f}-{q3:.3f}), "
              f"{1e3 * extra:+.4f} ms per evaluation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
