"""What the wrapper costs: ``dict_minimize.<framework>_api.minimize`` against hand-written SciPy glue.

Both sides run L-BFGS-B for the same fixed number of iterations on the same
user function: the chained Rosenbrock of a parameter vector split into ``K``
tensors (dict keys), which the function concatenates. The baseline is what a
careful user would write for that framework with
:func:`scipy.optimize.minimize` and ``jac=True`` (SciPy memoizes value and
gradient); the wrapper is one call of the library with ``jac=None``
(autodiff), or ``jac=True`` for NumPy, which has no autodiff. For NumPy in
float64 (full sizes) ``K = 0`` is SciPy's own case: a plain flat ndarray x0, the same
flat function handed to ``numpy_api.minimize`` and to SciPy (target 1.05x
at every size).

Each framework and dtype runs in its own worker process: JAX's float64 needs
``jax_enable_x64``, a process-wide switch the library never flips, and one
framework's threads or allocator should not weigh on another's timings.

Usage::

    python benchmarks/overhead.py                       # every available backend
    python benchmarks/overhead.py --backends numpy,torch --repeats 5
    python benchmarks/overhead.py --quick               # tiny sizes, for the smoke test
    python benchmarks/overhead.py --json results.json   # also write the raw data
    python benchmarks/overhead.py --threads 0           # the frameworks' own thread counts
    python benchmarks/overhead.py --cases numpy:float64:0:1000 --repeats 41   # a focused rerun

The Markdown table goes to stdout, progress to stderr. The exit status is 1
if a wrapper run and a baseline run did not take the same number of
iterations and evaluations (the comparison would be meaningless) or a worker
or case failed; a missed time target only shows as ``fail`` in the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import interleaved, machine, markdown_table, median_ci, spread  # noqa: E402

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
DTYPES = ("float32", "float64")
#: n -> L-BFGS-B iterations per run. At n = 1e6 SciPy's own L-BFGS-B step
#: (~30 ms here) dominates, so few iterations already give a stable time.
FULL_SIZES = {1_000: 200, 1_000_000: 20}
FULL_KEYS = (2, 200)
QUICK_SIZES = {100: 10}
QUICK_KEYS = (2, 10)
DEFAULT_REPEATS = {"full": 3, "quick": 2}
#: Backends whose two sides run separately compiled code (see summarize).
COMPILED = ("jax", "tensorflow")
EVALS_TOLERANCE = 0.05


def target_ratio(n: int, keys: int = 2) -> float:
    """Largest acceptable wrapper/baseline time ratio at problem size ``n``.

    ``keys=0`` is a plain flat ndarray x0 (numpy_api as a drop-in): 1.05 at every size.

    Examples
    --------
    >>> target_ratio(10**6), target_ratio(1000), target_ratio(1000, keys=0)
    (1.05, 1.3, 1.05)
    """
    return 1.05 if n >= 1_000_000 or keys == 0 else 1.3


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    backend: str
    dtype: str
    keys: int
    n: int
    iterations: int


def lbfgs_options(iterations: int) -> dict:
    """L-BFGS-B options that stop on the iteration limit only (zero tolerances)."""
    return {"maxiter": iterations, "ftol": 0.0, "gtol": 0.0}


def scipy_lbfgsb(value_and_grad: Callable, x_start, options: dict):
    """The baselines' call: SciPy with ``jac=True`` (its ``MemoizeJac`` pairs ``fun`` and ``jac``)."""
    import scipy.optimize

    return scipy.optimize.minimize(value_and_grad, x_start, jac=True, method="L-BFGS-B", options=options)


# ---------------------------------------------------------------------------
# The problem, shared by every framework
# ---------------------------------------------------------------------------


def split_problem(n: int, keys: int):
    """Key names, per-key sizes and offsets, and the float64 start point.

    The objective is the chained Rosenbrock over the concatenation of the
    keys, ``sum(100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2)``: the same problem
    for every ``K``, so that only the wrapper's per-key work changes with
    ``K``. The start is uniform in [-2, 2] (seed 0): from there L-BFGS-B
    makes progress for hundreds of iterations, in float32 at n = 1e6 too
    (the classic -1.2, 1 start stalls on float32 rounding within 15).
    """
    import numpy as np

    if not 1 <= keys <= n:
        raise ValueError(f"cannot split n={n} into keys={keys} tensors")
    names = [f"w{i:03d}" for i in range(keys)]
    sizes = [len(part) for part in np.array_split(np.arange(n), keys)]
    offsets = [int(o) for o in np.cumsum([0] + sizes[:-1])]
    start = np.random.default_rng(0).uniform(-2.0, 2.0, n)
    return names, sizes, offsets, start


# Each setup_<backend>(case) returns (wrapper, baseline, info): two
# zero-argument functions doing one complete run each and returning SciPy's
# OptimizeResult, and a dict of extra figures (framework version, the
# baseline's compile time). Both sides minimize the same user function.


class Counted:
    """The user's function, counting its real calls: equal work is equal calls, not equal nfev."""

    def __init__(self, fun: Callable):
        self.fun, self.calls = fun, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fun(*args)


def counting(run: Callable, user: Counted) -> Callable:
    """``run`` that records in its result (``user_calls``) how often ``user`` ran during it."""
    def counted_run():
        user.calls = 0
        res = run()
        res["user_calls"] = user.calls
        return res

    return counted_run


def setup_numpy(case: Case):
    import numpy as np
    import scipy

    from dict_minimize import numpy_api

    dtype = np.dtype(case.dtype)
    flat_x0 = case.keys == 0  # SciPy's own case: one flat ndarray, the user's flat function on both sides
    names, sizes, offsets, start = split_problem(case.n, max(case.keys, 1))
    x0 = {name: start[o : o + s].astype(dtype) for name, o, s in zip(names, offsets, sizes)}
    x_start = np.concatenate(list(x0.values())).astype(np.float64)
    options = lbfgs_options(case.iterations)

    def rosen_value_and_grad(params: dict) -> tuple[float, dict]:
        """The user's objective: value and analytic gradient dict (in the leaves' dtype)."""
        x = np.concatenate(list(params.values()))
        a, b = x[:-1], x[1:]
        t = b - a * a
        u = 1 - a
        g = np.zeros_like(x)
        g[:-1] = -400 * t * a - 2 * u
        g[1:] += 200 * t
        return float(np.sum(100 * t * t + u * u)), dict(zip(params, np.split(g, offsets[1:])))

    user = Counted(rosen_value_and_grad)

    def flat_value_and_grad(x):
        # Views of SciPy's vector (float64) or of one cast copy (float32).
        xd = x.astype(dtype, copy=False)
        params = {name: xd[o : o + s] for name, o, s in zip(names, offsets, sizes)}
        value, grads = user(params)
        return value, np.concatenate([grads[name] for name in names]).astype(np.float64, copy=False)

    def baseline():
        return scipy_lbfgsb(flat_value_and_grad, x_start, options)

    def wrapper():
        if flat_x0:
            return numpy_api.minimize(flat_value_and_grad, x_start, jac=True, method="L-BFGS-B", options=options)
        return numpy_api.minimize(user, x0, jac=True, method="L-BFGS-B", options=options)

    info = {"framework": f"numpy {np.__version__}, scipy {scipy.__version__}"}
    return counting(wrapper, user), counting(baseline, user), info


def setup_torch(case: Case):
    import numpy as np
    import torch

    from dict_minimize import torch_api

    np_dtype = np.dtype(case.dtype)
    names, sizes, offsets, start = split_problem(case.n, case.keys)
    x0 = {name: torch.from_numpy(start[o : o + s].astype(np_dtype))
          for name, o, s in zip(names, offsets, sizes)}
    x_start = np.concatenate([v.numpy() for v in x0.values()]).astype(np.float64)
    options = lbfgs_options(case.iterations)

    def rosen(params: dict) -> torch.Tensor:
        """The user's objective: the chained Rosenbrock of the keys' concatenation."""
        x = torch.cat(list(params.values()))
        a, b = x[:-1], x[1:]
        return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum()

    def flat_value_and_grad(x):
        # One host tensor (no copy for float64: SciPy's own vector), views
        # per key; autograd's split backward concatenates the gradient.
        flat = torch.from_numpy(x.astype(np_dtype, copy=False)).requires_grad_()
        params = dict(zip(names, torch.split(flat, sizes)))
        value = user(params)
        (grad,) = torch.autograd.grad(value, flat)
        return value.item(), grad.numpy().astype(np.float64, copy=False)

    user = Counted(rosen)

    def baseline():
        return scipy_lbfgsb(flat_value_and_grad, x_start, options)

    def wrapper():
        return torch_api.minimize(user, x0, method="L-BFGS-B", options=options)

    info = {"framework": f"torch {torch.__version__} ({torch.get_num_threads()} threads)"}
    return counting(wrapper, user), counting(baseline, user), info


def _compile_seconds(call: Callable[[], Any]) -> float:
    """First call (trace + compile + run) minus a second, compiled one."""
    import time

    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    call()
    return max(first - (time.perf_counter() - start), 0.0)


def setup_jax(case: Case):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dict_minimize import jax_api

    np_dtype = np.dtype(case.dtype)
    if np_dtype == np.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("the JAX float64 worker must run with jax_enable_x64")
    names, sizes, offsets, start = split_problem(case.n, case.keys)
    x0 = {name: jnp.asarray(start[o : o + s].astype(np_dtype))
          for name, o, s in zip(names, offsets, sizes)}
    x_start = np.concatenate([np.asarray(v) for v in x0.values()]).astype(np.float64)
    options = lbfgs_options(case.iterations)

    def rosen(params: dict) -> jax.Array:
        """The user's objective: the chained Rosenbrock of the keys' concatenation."""
        x = jnp.concatenate(list(params.values()))
        a, b = x[:-1], x[1:]
        return jnp.sum(100 * (b - a * a) ** 2 + (1 - a) ** 2)

    rosen_value_and_grad = jax.value_and_grad(rosen)

    @jax.jit
    def flat_value_and_grad_jit(flat):
        # Unflatten and flatten inside the jit: one transfer each way.
        params = {name: flat[o : o + s] for name, o, s in zip(names, offsets, sizes)}
        value, grads = rosen_value_and_grad(params)
        return value, jnp.concatenate([grads[name] for name in names])

    def flat_value_and_grad(x):
        value, grad = flat_value_and_grad_jit(jnp.asarray(x.astype(np_dtype, copy=False)))
        return float(value), np.asarray(grad).astype(np.float64)

    compile_s = _compile_seconds(lambda: flat_value_and_grad(x_start))

    def baseline():
        return scipy_lbfgsb(flat_value_and_grad, x_start, options)

    # Jitted by the user, as the baseline is: the wrapper may then keep its
    # compilation across calls (a plain fun is compiled in every call).
    rosen_jit = jax.jit(rosen)

    def wrapper():
        return jax_api.minimize(rosen_jit, x0, method="L-BFGS-B", options=options)

    info = {"framework": f"jax {jax.__version__} (x64 {bool(jax.config.jax_enable_x64)})",
            "baseline_compile_s": compile_s}
    return wrapper, baseline, info


def setup_tensorflow(case: Case):
    import numpy as np
    import tensorflow as tf

    from dict_minimize import tensorflow_api

    np_dtype = np.dtype(case.dtype)
    tf_dtype = tf.as_dtype(np_dtype)
    names, sizes, offsets, start = split_problem(case.n, case.keys)
    x0 = {name: tf.constant(start[o : o + s].astype(np_dtype))
          for name, o, s in zip(names, offsets, sizes)}
    x_start = np.concatenate([v.numpy() for v in x0.values()]).astype(np.float64)
    options = lbfgs_options(case.iterations)

    def rosen(params: dict) -> tf.Tensor:
        """The user's objective: the chained Rosenbrock of the keys' concatenation."""
        x = tf.concat(list(params.values()), 0)
        a, b = x[:-1], x[1:]
        return tf.reduce_sum(100 * tf.square(b - a * a) + tf.square(1 - a))

    @tf.function(input_signature=[tf.TensorSpec([case.n], tf_dtype)])
    def flat_value_and_grad_graph(flat):
        with tf.GradientTape() as tape:
            tape.watch(flat)
            params = dict(zip(names, tf.split(flat, sizes)))
            value = rosen(params)
        return value, tape.gradient(value, flat)

    # The concrete function skips tf.function's per-call signature matching.
    concrete = None

    def flat_value_and_grad(x):
        nonlocal concrete
        if concrete is None:  # traced on the first call, so that it counts as compilation
            concrete = flat_value_and_grad_graph.get_concrete_function()
        value, grad = concrete(tf.constant(x.astype(np_dtype, copy=False)))
        return float(value), grad.numpy().astype(np.float64, copy=False)

    compile_s = _compile_seconds(lambda: flat_value_and_grad(x_start))

    def baseline():
        return scipy_lbfgsb(flat_value_and_grad, x_start, options)

    # A tf.function of the user's, as the baseline is: the wrapper may then
    # keep its traces across calls (a plain fun is traced in every call).
    rosen_graph = tf.function(rosen)

    def wrapper():
        return tensorflow_api.minimize(rosen_graph, x0, method="L-BFGS-B", options=options)

    info = {"framework": f"tensorflow {tf.__version__}", "baseline_compile_s": compile_s}
    return wrapper, baseline, info


SETUPS = {"numpy": setup_numpy, "torch": setup_torch, "jax": setup_jax, "tensorflow": setup_tensorflow}


# ---------------------------------------------------------------------------
# Worker: one backend and dtype, in its own process
# ---------------------------------------------------------------------------


def cases_for(backend: str, dtype: str, quick: bool, only: set | None = None) -> list[Case]:
    """Every (K, n) case of one backend and dtype, smallest n first (those in ``only`` if given)."""
    sizes, keys = (QUICK_SIZES, QUICK_KEYS) if quick else (FULL_SIZES, FULL_KEYS)
    if backend == "numpy" and dtype == "float64" and not quick:
        keys = (0,) + tuple(keys)  # K = 0: a flat ndarray x0, numpy_api against SciPy itself
    cases = [Case(backend, dtype, k, n, iters) for n, iters in sizes.items() for k in keys]
    return [c for c in cases if only is None or (c.backend, c.dtype, c.keys, c.n) in only]


def parse_cases(text: str) -> set:
    """``--cases``: ``backend:dtype:K:n`` entries, comma-separated.

    Examples
    --------
    >>> sorted(parse_cases("numpy:float64:0:1000,torch:float32:2:1000000"))
    [('numpy', 'float64', 0, 1000), ('torch', 'float32', 2, 1000000)]
    """
    out = set()
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        if len(parts) != 4 or parts[0] not in BACKENDS or parts[1] not in DTYPES:
            raise ValueError(f"--cases: {entry!r} is not backend:dtype:K:n "
                             f"(backend in {','.join(BACKENDS)}, dtype in {','.join(DTYPES)})")
        out.add((parts[0], parts[1], int(parts[2]), int(float(parts[3]))))
    return out


def run_case(case: Case, repeats: int) -> dict:
    """Warm up and time both sides of one case; the raw figures as a dict."""
    wrapper, baseline, info = SETUPS[case.backend](case)
    timings = interleaved({"wrapper": wrapper, "baseline": baseline}, repeats)
    record: dict[str, Any] = {**asdict(case), "repeats": repeats, **info}
    for side, runs in timings.items():
        record[f"{side}_warmup_s"] = runs[0][0]
        record[f"{side}_s"] = [wall for wall, _, _ in runs[1:]]
        record[f"{side}_cpu_s"] = [cpu for _, cpu, _ in runs[1:]]
        record[f"{side}_nit"] = [int(res.nit) for _, _, res in runs]
        record[f"{side}_nfev"] = [int(res.nfev) for _, _, res in runs]
        # The user function's real calls where Python can count them (eager backends).
        record[f"{side}_user_calls"] = [res.get("user_calls") for _, _, res in runs]
        record[f"{side}_fun"] = [float(res.fun) for _, _, res in runs]
        record[f"{side}_message"] = str(runs[-1][2].message)
    return record


def worker(backend: str, dtype: str, quick: bool, repeats: int, out: Path, only: set | None = None) -> None:
    """Run one backend's cases in ``dtype`` and write ``{"cases": [...]}`` or ``{"skipped": why}``."""
    import importlib

    sys.path.insert(0, str(REPO))  # measure the checkout this script lives in
    try:
        importlib.import_module(backend)  # each backend is named after its framework
        if backend == "jax" and dtype == "float64":
            import jax

            jax.config.update("jax_enable_x64", True)  # this worker's process only
        importlib.import_module(f"dict_minimize.{backend}_api")
    except ModuleNotFoundError as err:
        if err.name not in (backend, f"dict_minimize.{backend}_api"):
            raise  # a broken backend is an error, not a skip
        out.write_text(json.dumps({"skipped": f"{type(err).__name__}: {err}"}))
        return
    records, errors = [], []
    for case in cases_for(backend, dtype, quick, only):
        print(f"  {backend} {dtype} K={case.keys} n={case.n} ...", file=sys.stderr, flush=True)
        try:
            records.append(run_case(case, repeats))
        except Exception as err:  # report it and go on with the other cases
            where = traceback.extract_tb(err.__traceback__)[-1]
            message = f"{type(err).__name__}: {str(err)[:300]} (at {where.filename}:{where.lineno})"
            errors.append(f"K={case.keys} n={case.n}: {message}")
            print(f"    failed: {message}", file=sys.stderr, flush=True)
    out.write_text(json.dumps({"cases": records, "errors": errors}))


# ---------------------------------------------------------------------------
# Orchestrator: workers, summary, table
# ---------------------------------------------------------------------------


def run_worker(backend: str, dtype: str, quick: bool, repeats: int, threads: int, cases: str | None = None) -> dict:
    """One worker process; its JSON, or ``{"error": ...}`` if it failed."""
    worker_args = ["--worker", backend, "--dtype", dtype, "--repeats", str(repeats)]
    if cases:
        worker_args += ["--cases", cases]
    return _common.run_worker(__file__, worker_args + (["--quick"] if quick else []), threads)


def summarize(record: dict) -> dict:
    """Medians, ratio, target, verdict, noise and path check of one case's raw record.

    The two sides are comparable when every run took the same number of
    iterations and, for NumPy and PyTorch (the same arithmetic on both
    sides, so the same path), the same number of evaluations. JAX and
    TensorFlow compile each side's function separately, and a reduction
    may round differently: there the evaluation counts may differ by
    ``EVALS_TOLERANCE``.
    """
    wrapper_s = statistics.median(record["wrapper_s"])
    baseline_s = statistics.median(record["baseline_s"])
    # The verdict's ratio is the median of the per-pair ratios: the two runs
    # of a pair ran back to back, so a drift of the machine cancels in each.
    paired = [w / b for w, b in zip(record["wrapper_s"], record["baseline_s"])]
    ratio = statistics.median(paired)
    low, _, high = statistics.quantiles(paired, n=4) if len(paired) > 1 else (ratio, ratio, ratio)
    nits = set(record["wrapper_nit"]) | set(record["baseline_nit"])
    nfevs = set(record["wrapper_nfev"]) | set(record["baseline_nfev"])
    tolerance = EVALS_TOLERANCE if record["backend"] in COMPILED else 0.0
    out = {
        "baseline_median_s": baseline_s,
        "wrapper_median_s": wrapper_s,
        "ratio": ratio,
        "paired_ratios": paired,
        "ratio_interquartile": (low, high),
        "ratio_ci95": median_ci(paired),
        "cpu_ratio": statistics.median([w / b for w, b in zip(record["wrapper_cpu_s"], record["baseline_cpu_s"])]),
        "target": target_ratio(record["n"], record.get("keys", 1)),
        "nit": sorted(nits),
        "nfev": sorted(nfevs),
        "comparable": len(nits) == 1 and max(nfevs) <= (1 + tolerance) * min(nfevs),
        "noise": max(spread(record["wrapper_s"]), spread(record["baseline_s"])),
        "overhead_per_eval_s": (wrapper_s - baseline_s) / max(min(nfevs), 1),
        "wrapper_warmup_excess_s": record["wrapper_warmup_s"] - wrapper_s,
    }
    if "baseline_compile_s" in record:
        # One call from a cold start: compilation included on both sides.
        out["one_shot_ratio"] = record["wrapper_warmup_s"] / (
            record["baseline_compile_s"] + record["baseline_warmup_s"])
    calls = set(record.get("wrapper_user_calls", [])) | set(record.get("baseline_user_calls", []))
    calls.discard(None)
    out["user_calls"] = sorted(calls)
    if calls:  # counted: both sides called the user function equally often, in every run
        out["comparable"] = out["comparable"] and len(calls) == 1 and calls <= nfevs
    out["passed"] = out["comparable"] and ratio <= out["target"]
    # Settled when the median's 95% confidence interval lies on one side of the target.
    ci_low, ci_high = out["ratio_ci95"]
    out["conclusive"] = not (ci_low <= out["target"] < ci_high)
    return out


def _counts(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else "/".join(map(str, values))


def report(records: list[dict], problems: list[str], repeats: int, threads: int) -> str:
    """The Markdown report: main table, compile table (JAX/TF), noise and problems."""
    header = ["backend", "dtype", "K", "n", "iterations", "evals", "baseline s", "wrapper s",
              "ratio", "target", "pass/fail", "cpu ratio", "noise", "overhead/eval"]
    rows, compile_rows = [], []
    for rec in records:
        s = rec["summary"]
        verdict = "pass" if s["passed"] else ("MISMATCH" if not s["comparable"] else "fail")
        rows.append([
            rec["backend"], rec["dtype"], rec["keys"], f"{rec['n']:.0e}".replace("e+0", "e"),
            _counts(s["nit"]), _counts(s["nfev"]), f"{s['baseline_median_s']:.3f}",
            f"{s['wrapper_median_s']:.3f}", f"{s['ratio']:.3f}", f"<= {s['target']}", verdict,
            f"{s['cpu_ratio']:.3f}", f"{100 * s['noise']:.1f}%", f"{1e3 * s['overhead_per_eval_s']:+.3f} ms",
        ])
        if "baseline_compile_s" in rec:
            compile_rows.append([
                rec["backend"], rec["dtype"], rec["keys"], f"{rec['n']:.0e}".replace("e+0", "e"),
                f"{rec['baseline_compile_s']:.3f}", f"{s['wrapper_warmup_excess_s']:.3f}",
                f"{rec['baseline_compile_s'] + rec['baseline_warmup_s']:.3f}",
                f"{rec['wrapper_warmup_s']:.3f}",
                f"{s['one_shot_ratio']:.3f}",
            ])
    parts = [markdown_table(header, rows, right=header[2:10] + header[11:])]
    parts.append(
        f"\nTimes: median of {repeats} interleaved runs after one warm-up run per side; "
        "ratio = the median of the per-pair wrapper / baseline ratios (wall clock; the verdict); "
        "cpu ratio = the median of the per-pair ratios in process CPU time; "
        "noise = (max - min) / median of a side's wall times, the larger "
        "side; overhead/eval = (wrapper - baseline) / evals. "
        + (f"Threads capped at {threads} (--threads)." if threads else "Threads: frameworks' defaults.")
    )
    if records:
        noises = sorted((r["summary"]["noise"], r["backend"], r["dtype"], r["keys"], r["n"]) for r in records)
        worst = noises[-1]
        parts.append(
            f"Machine noise: median spread {100 * statistics.median(n[0] for n in noises):.1f}%, "
            f"worst {100 * worst[0]:.1f}% ({worst[1]} {worst[2]} K={worst[3]} n={worst[4]})."
        )
    if compile_rows:
        parts.append(
            "\nCompilation. The baseline compiles once per case, before its timed runs (baseline compile "
            "s: first call minus second call). The wrapper's first-run excess is its warm-up run minus its "
            "median run: the compilation it reuses on later calls; a wrapper that compiles in every call "
            "pays that inside the times above instead. One-shot: one call from a cold start, compilation "
            "included (baseline: compile + warm-up run; wrapper: warm-up run).\n"
        )
        compile_header = ["backend", "dtype", "K", "n", "baseline compile s", "wrapper first-run excess s",
                          "one-shot baseline s", "one-shot wrapper s", "one-shot ratio"]
        parts.append(markdown_table(compile_header, compile_rows, right=compile_header[2:]))
    if problems:
        parts.append("\n" + "\n".join(f"- {p}" for p in problems))
    return "\n".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {','.join(BACKENDS)} (default: all available)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per side (default: 3, or 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="thread cap for BLAS, OpenMP, torch, TensorFlow and XLA in the workers "
                             "(default 1: steady timings on a small shared machine; 0: no cap)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the raw data (default: benchmarks/results/overhead.json, "
                             "overhead_quick.json with --quick; not with --report-from)")
    parser.add_argument("--report-from", type=Path, default=None, metavar="JSON",
                        help="print the report of an earlier --json file instead of running")
    parser.add_argument("--cases", default=None, metavar="B:D:K:N,...",
                        help="only these cases, as backend:dtype:K:n (a focused rerun; "
                             "default --json: benchmarks/results/overhead_focused.json)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    try:
        args.only = parse_cases(args.cases) if args.cases else None
    except ValueError as err:
        parser.error(str(err))
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends: unknown backend {unknown[0] if unknown else '(none)'!r}; "
                     f"choose from {','.join(BACKENDS)}")
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS["quick" if args.quick else "full"]
    if args.threads < 0:
        parser.error(f"--threads must be 0 (no cap) or more, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.json is None and args.report_from is None:
        name = "overhead_quick" if args.quick else "overhead_focused" if args.only else "overhead"
        args.json = HERE / "results" / f"{name}.json"
    return args


def run_all(args: argparse.Namespace) -> dict:
    """Every requested backend and dtype, each in a worker; the raw data."""
    cases: list[dict] = []
    skipped: list[str] = []  # a backend that is not installed or not written yet
    errors: list[str] = []  # a failed worker or case
    for backend in args.backends:
        for dtype in DTYPES:
            if args.only is not None and not any(c[:2] == (backend, dtype) for c in args.only):
                continue
            print(f"{backend} {dtype}:", file=sys.stderr, flush=True)
            result = run_worker(backend, dtype, args.quick, args.repeats, args.threads, args.cases)
            if "skipped" in result:
                skipped.append(f"{backend}: skipped ({result['skipped']})")
                break  # the other dtype would be skipped for the same reason
            if "error" in result:
                errors.append(f"{backend} {dtype}: {result['error']}")
                continue
            errors += [f"{backend} {dtype} {e}" for e in result["errors"]]
            cases += result["cases"]
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"date": date, "machine": machine(), "quick": args.quick, "repeats": args.repeats,
            "threads": args.threads, "cases": cases, "skipped": skipped, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args.dtype, args.quick, args.repeats, args.out, args.only)
        return 0
    data = json.loads(args.report_from.read_text()) if args.report_from else run_all(args)
    data.setdefault("command", _common.command_line())
    problems = list(data["errors"])
    for case in data["cases"]:
        case["summary"] = summary = summarize(case)
        if not summary["comparable"]:
            problems.append(
                f"{case['backend']} {case['dtype']} K={case['keys']} n={case['n']}: wrapper and baseline "
                f"differ (nit {case['wrapper_nit']} vs {case['baseline_nit']}, "
                f"nfev {case['wrapper_nfev']} vs {case['baseline_nfev']})"
            )
    data["problems"] = problems
    print(f"dict_minimize wrapper overhead, {data['date']}, {data['machine']}\n")
    print(report(data["cases"], data["skipped"] + problems, data["repeats"], data["threads"]))
    if data["quick"]:
        print("\n--quick: tiny sizes for a smoke test; the times and verdicts mean nothing.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
