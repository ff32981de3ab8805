"""JAX on growing minibatches: compilations and time, with and without ``bucket=``.

Every distinct batch shape makes ``jax.jit`` compile the objective again.
``growing_batches`` as the guide's recipe gives it (start 250, growth
1.0046, overlap 0.5) makes a new shape at almost every iteration;
``bucket=2.0`` rounds sizes down to 250 * 2**k, a handful of shapes. The
baseline is the same run on fixed-size batches of 250 (one compilation). All
three: a 40-100-100-10 MLP (GELU) on 4000 synthetic MNIST-1D-sized samples,
L-BFGS-B, the same number of iterations.

Run: ``python benchmarks/growing_batches.py [--iterations 30] [--json PATH]``.
Writes ``benchmarks/results/growing_batches.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dict_minimize import growing_batches  # noqa: E402
from dict_minimize.jax_api import minimize  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "growing_batches.json"


def data(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 40)).astype(np.float32)
    teacher = rng.normal(size=(40, 10)).astype(np.float32)
    y = np.argmax(X @ teacher + rng.normal(size=(n, 10)), axis=1)
    return X, y


def init(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sizes = [(40, 100), (100, 100), (100, 10)]
    params = {}
    for i, (fan_in, fan_out) in enumerate(sizes):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(fan_in, fan_out)).astype(np.float32) / np.sqrt(fan_in))
        params[f"b{i}"] = jnp.zeros(fan_out, jnp.float32)
    return params


def run(name: str, batches, iterations: int) -> dict:
    traces = [0]

    def loss(p, batch):
        traces[0] += 1  # Python runs once per trace
        xb, yb = batch
        h = jax.nn.gelu(xb @ p["w0"] + p["b0"])
        h = jax.nn.gelu(h @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], axis=1))

    start_cpu, start = time.process_time(), time.perf_counter()
    res = minimize(loss, init(), method="L-BFGS-B", batches=batches, options={"maxiter": iterations})
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"setting": name, "nit": int(res.nit), "traces": traces[0], "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3), "fun": float(res.fun)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--json", type=pathlib.Path, default=RESULTS)
    a = parser.parse_args()
    X, y = data()
    recipe = dict(growth=1.0046, overlap=0.5, seed=0)
    rows = [
        run("fixed-size batches of 250", [(X[i:i + 250], y[i:i + 250]) for i in range(0, len(X), 250)],
            a.iterations),
        run("growing_batches(4000, 250, growth=1.0046, overlap=0.5)",
            ((X[i], y[i]) for i in growing_batches(len(X), 250, **recipe)), a.iterations),
        run("growing_batches(..., bucket=2.0)",
            ((X[i], y[i]) for i in growing_batches(len(X), 250, bucket=2.0, **recipe)), a.iterations),
    ]
    print(f"{'setting':58s} {'nit':>4s} {'traces':>6s} {'wall s':>7s} {'cpu s':>7s}")
    for r in rows:
        print(f"{r['setting']:58s} {r['nit']:4d} {r['traces']:6d} {r['wall_s']:7.2f} {r['cpu_s']:7.2f}")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/growing_batches.py --iterations {a.iterations}"
    a.json.write_text(json.dumps({"command": command, "jax": jax.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
