"""``least_squares`` with autodiff Jacobians against SciPy's finite differences.

The problem: fit a small neural field, an MLP ``(x, y) -> 2 -> H -> H -> 1``
with tanh activations (``H = 20``: 501 parameters in six tensors, a dict),
to a smooth target sampled at 20 000 random points: 20 000 residuals.

Sides, all ``method='trf'`` with SciPy's default tolerances and the same
``max_nfev`` from the same x0, in float64:

- ``scipy 2-point``: :func:`scipy.optimize.least_squares` on a flat NumPy
  residual function, ``jac='2-point'`` (SciPy's default; what a NumPy user
  without derivatives gets): every Jacobian costs n = 501 residual evaluations.
- ``numpy_api 2-point``: the same through ``dict_minimize.numpy_api`` with
  the dict of arrays (its drop-in default).
- ``torch_api autodiff``, ``jax_api autodiff``, ``tensorflow_api autodiff``:
  the same dict of tensors with the default ``jac=None``, the dense
  Jacobian by forward-mode autodiff (m >> n).

SciPy counts neither side's Jacobian evaluations in ``nfev``; ``njev`` is
the number of Jacobians. Wall time is per complete call, including JAX's
and TensorFlow's compilation (the library compiles once per call).

Usage::

    python benchmarks/least_squares.py                     # numpy, torch, jax
    python benchmarks/least_squares.py --backends numpy,torch,jax,tensorflow --repeats 3
    python benchmarks/least_squares.py --quick             # tiny sizes, for the smoke test
    python benchmarks/least_squares.py --json benchmarks/results/least_squares.json

The Markdown table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import machine, markdown_table, timed  # noqa: E402

FULL = {"hidden": 20, "points": 20_000, "max_nfev": 12}  # 501 parameters
QUICK = {"hidden": 4, "points": 200, "max_nfev": 5}


def target(xy: np.ndarray) -> np.ndarray:
    return np.sin(3 * xy[:, 0]) * np.cos(2 * xy[:, 1]) + 0.5 * xy[:, 0] * xy[:, 1]


def init_params(hidden: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 1.0, (2, hidden)), "b1": np.zeros(hidden),
        "w2": rng.normal(0, 1.0 / np.sqrt(hidden), (hidden, hidden)), "b2": np.zeros(hidden),
        "w3": rng.normal(0, 1.0 / np.sqrt(hidden), (hidden, 1)), "b3": np.zeros(1),
    }


def field(p: dict, xy, tanh):
    h = tanh(xy @ p["w1"] + p["b1"])
    h = tanh(h @ p["w2"] + p["b2"])
    return (h @ p["w3"] + p["b3"])[:, 0]


def scipy_side(p0: dict, xy: np.ndarray, y: np.ndarray, max_nfev: int):
    from scipy.optimize import least_squares

    keys = list(p0)
    shapes = [p0[k].shape for k in keys]
    sizes = [p0[k].size for k in keys]
    x0 = np.concatenate([p0[k].ravel() for k in keys])

    def residuals(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        return field({k: v.reshape(s) for k, v, s in zip(keys, parts, shapes)}, xy, np.tanh) - y

    return lambda: least_squares(residuals, x0, max_nfev=max_nfev)


def api_side(backend: str, p0: dict, xy: np.ndarray, y: np.ndarray, max_nfev: int):
    if backend == "numpy":
        from dict_minimize.numpy_api import least_squares

        conv, tanh = np.array, np.tanh
    elif backend == "torch":
        import torch

        from dict_minimize.torch_api import least_squares

        torch.set_num_threads(max(1, torch.get_num_threads()))
        conv, tanh = (lambda a: torch.tensor(a, dtype=torch.float64)), torch.tanh
    elif backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # the benchmark's own choice: float64 on every side
        import jax.numpy as jnp

        from dict_minimize.jax_api import least_squares

        conv, tanh = (lambda a: jnp.asarray(a, dtype=jnp.float64)), jnp.tanh
    elif backend == "tensorflow":
        import tensorflow as tf

        from dict_minimize.tensorflow_api import least_squares

        conv, tanh = (lambda a: tf.constant(a, dtype=tf.float64)), tf.tanh
    else:
        raise ValueError(f"unknown backend {backend!r}")
    xy_t, y_t = conv(xy), conv(y)
    x0 = {k: conv(v) for k, v in p0.items()}

    def residuals(p):
        return field(p, xy_t, tanh) - y_t

    return lambda: least_squares(residuals, x0, max_nfev=max_nfev)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,torch,jax")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--points", type=int, help="residuals (default 20000; --quick: 200)")
    parser.add_argument("--max-nfev", type=int, help="SciPy's max_nfev (default 12; --quick: 5)")
    parser.add_argument("--warmup", action="store_true", help="one untimed call per side first")
    parser.add_argument("--json", type=Path, help="merge the raw data into this file, under the run's label")
    opts = parser.parse_args(argv)
    size = dict(QUICK if opts.quick else FULL)
    if opts.points:
        size["points"] = opts.points
    if opts.max_nfev:
        size["max_nfev"] = opts.max_nfev
    rng = np.random.default_rng(1)
    xy = rng.uniform(-1, 1, (size["points"], 2))
    y = target(xy)
    p0 = init_params(size["hidden"])
    n = sum(v.size for v in p0.values())
    sides = {"scipy 2-point": scipy_side(p0, xy, y, size["max_nfev"])}
    for b in opts.backends.split(","):
        label = f"{b}_api " + ("2-point" if b == "numpy" else "autodiff")
        sides[label] = api_side(b, p0, xy, y, size["max_nfev"])
    rows, raw = [], {}
    for label, run in sides.items():
        print(f"{label} ...", file=sys.stderr, flush=True)
        if opts.warmup:
            run()  # imports, lazy initialization, JAX's and TensorFlow's first compilation
        runs = [timed(run) for _ in range(max(1, opts.repeats))]
        res = runs[-1][2]
        walls = [w for w, _, _ in runs]
        raw[label] = {"wall_s": walls, "cpu_s": [c for _, c, _ in runs], "nfev": int(res.nfev),
                      "njev": int(res.njev), "cost": float(res.cost), "status": int(res.status),
                      "optimality": float(res.optimality)}
        rows.append([label, res.nfev, res.njev, f"{statistics.median(walls):.2f}",
                     f"{statistics.median(raw[label]['cpu_s']):.2f}",
                     f"{float(res.cost):.6g}", f"{float(res.optimality):.3g}"])
    base = statistics.median(raw["scipy 2-point"]["cpu_s"])
    for row, label in zip(rows, raw):
        row.insert(5, f"{base / statistics.median(raw[label]['cpu_s']):.2f}x")
    header = ["side", "nfev", "njev", "wall s", "CPU s", "speed-up vs SciPy (CPU)", "final cost",
              "optimality"]
    print(f"m = {size['points']} residuals, n = {n} parameters, max_nfev = {size['max_nfev']}, "
          f"method='trf'; {machine()}\n")
    print(markdown_table(header, rows, right=header[1:]))
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(opts.json.read_text()) if opts.json.exists() else {}
        data[f"m={size['points']} n={n} max_nfev={size['max_nfev']} {opts.backends}"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "m": size["points"], "n": n, "max_nfev": size["max_nfev"],
            "repeats": opts.repeats, "warmup": opts.warmup, "threads": "OMP_NUM_THREADS=1", "sides": raw,
        }
        command = "python " + " ".join(["benchmarks/least_squares.py"] + sys.argv[1:])
        data[f"m={size['points']} n={n} max_nfev={size['max_nfev']} {opts.backends}"]["command"] = command
        data = {"command": command, **{k: v for k, v in data.items() if k != "command"}}
        opts.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
