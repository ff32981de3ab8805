"""Train real models with every framework's example and print one Markdown table.

Runs, at full size (MNIST-1D's 4000/1000 split):

- ``examples/mnist1d_torch.py``: the MLP and the CNN, each with full-batch
  L-BFGS-B, L-BFGS-B in the stochastic mode (batches growing to the full set,
  and fixed 1000-sample batches) and Adam at the same number of gradient
  evaluations; then, for reference, the MLP with ReLU (the MNIST-1D
  paper's nonlinearity) and Adam for the MNIST-1D repository's 6000 steps;
- ``examples/mnist1d_mlp_tensorflow.py`` and ``examples/mnist1d_mlp_jax.py``
  (full-batch L-BFGS-B), when those files and their frameworks are there;
- ``examples/digits_logistic.py``: the scikit-learn comparison, printed under the table.

Each framework runs in its own worker process with its thread pools capped
(``--threads``, default 1: on a small shared machine more threads mostly
contend; ``0`` leaves the frameworks' defaults).

Usage::

    python benchmarks/training.py            # full size (about 30 CPU-minutes)
    python benchmarks/training.py --quick    # 400 training samples, 20 iterations: a smoke run
    python benchmarks/training.py --frameworks torch --json rows.json

The table goes to stdout, progress to stderr. The exit status is 1 if a
worker failed.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import machine, markdown_table  # noqa: E402

FRAMEWORKS = ("torch", "tensorflow", "jax")
#: The example each framework's worker imports ``main`` from (besides torch's digits example).
EXAMPLE = {"torch": "mnist1d_torch", "tensorflow": "mnist1d_mlp_tensorflow", "jax": "mnist1d_mlp_jax"}
QUICK = {"n_train": 400, "n_test": 400, "maxiter": 20}
#: Adam steps of the MNIST-1D repository's reference training runs.
ADAM_REFERENCE_STEPS = 6000
HEADER = ["framework", "model", "method", "test accuracy", "wall time (s)", "gradient evaluations",
          "loss calls", "passes over the data"]


# ---------------------------------------------------------------------------
# Workers: one framework each, rows as JSON
# ---------------------------------------------------------------------------


def _accepted(function, **kwargs) -> dict[str, Any]:
    """The keyword arguments ``function`` takes (the examples differ in their knobs)."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in names}


class CallCounter:
    """How often the user's loss function really ran (SciPy's nfev would hide an extra pass)."""

    def __init__(self) -> None:
        self.calls = 0

    def bump(self) -> None:
        self.calls += 1


def count_torch_calls(module) -> CallCounter:
    """Count the loss calls of ``mnist1d_torch``'s training functions: each row gets ``user_calls``.

    Every loss the example makes (``make_loss``) is wrapped to count its
    calls (eager PyTorch: one per forward pass), and every ``train_*``
    function resets the count and returns it with its figures.
    """
    counter = CallCounter()
    make_loss = module.make_loss

    def counting_make_loss(*args, **kwargs):
        loss = make_loss(*args, **kwargs)

        def counted(*a, **k):
            counter.bump()
            return loss(*a, **k)

        return counted

    module.make_loss = counting_make_loss
    for name in ("train_lbfgs", "train_stochastic", "train_stochastic_fixed", "train_adam"):
        def counted_train(*args, _train=getattr(module, name), **kwargs):
            counter.calls = 0
            info = _train(*args, **kwargs)
            return dict(info, user_calls=counter.calls)

        setattr(module, name, counted_train)
    return counter


def count_compiled_calls(module, framework: str) -> list[int]:
    """Count the executions of ``module.loss`` inside the compiled function (a host callback).

    Returns the list to which each ``module.minimize`` call appends its count.
    """
    counter, counts = CallCounter(), []
    loss, minimize = module.loss, module.minimize
    if framework == "jax":
        import jax

        def counted(*args, **kwargs):
            jax.debug.callback(counter.bump)
            return loss(*args, **kwargs)
    else:
        import tensorflow as tf

        def counted(*args, **kwargs):
            tf.py_function(lambda: counter.bump() or [], [], Tout=[])
            return loss(*args, **kwargs)

    def counting_minimize(*args, **kwargs):
        counter.calls = 0
        res = minimize(*args, **kwargs)
        counts.append(counter.calls)
        return res

    module.loss, module.minimize = counted, counting_minimize
    return counts


def torch_rows(quick: bool) -> tuple[list[dict], dict]:
    """Rows of the PyTorch example (and its reference runs), and the digits comparison."""
    import digits_logistic
    import mnist1d_torch

    count_torch_calls(mnist1d_torch)
    size = dict(QUICK, stochastic_start=50, stochastic_batch=100) if quick else {}
    # Untimed warm-up: the first Adam step and the first convolution load lazily.
    mnist1d_torch.main(n_train=200, n_test=10, maxiter=2, stochastic_start=50, stochastic_batch=100,
                       verbose=False)
    rows = mnist1d_torch.main(**size, verbose=False)
    # The paper's ReLU MLP: full-batch L-BFGS-B (and Adam at its budget).
    rows += mnist1d_torch.main(**size, models=["mlp"], methods=["lbfgs", "adam"], activation="relu",
                               verbose=False)
    # Adam at the MNIST-1D repository's budget, for reference.
    reference = dict(size, maxiter=QUICK["maxiter"] if quick else ADAM_REFERENCE_STEPS)
    for row in mnist1d_torch.main(**reference, methods=["adam"], verbose=False):
        rows.append(dict(row, method="adam, repository's budget"))
    for row in rows:
        row["model"] = f"{row['model']} ({row['activation']})"
    digits = digits_logistic.main(verbose=False)
    return rows, digits


def other_rows(framework: str, quick: bool) -> list[dict]:
    """The TensorFlow or JAX example: one full-batch L-BFGS-B row."""
    import importlib

    module = importlib.import_module(EXAMPLE[framework])
    counts = count_compiled_calls(module, framework)
    main = module.main
    out = main(**_accepted(main, **(QUICK if quick else {}), verbose=False))
    hidden = inspect.signature(main).parameters.get("hidden")
    widths = "-".join(map(str, hidden.default)) if hidden is not None else "?"
    return [{
        "framework": framework, "model": f"mlp 40-{widths}-10 (gelu)", "method": "lbfgs",
        "test_accuracy": float(out["test_accuracy"]), "wall_time_s": float(out["seconds"]),
        "grad_evals": int(out["nfev"]), "user_calls": counts[-1], "passes": float(counts[-1]),
        "nit": int(out["nit"]),
        "message": str(out.get("message", "")),
    }]


def worker(framework: str, quick: bool, out: Path) -> None:
    """Write ``{"rows": [...], "digits": {...}}``, ``{"skipped": why}`` or ``{"error": ...}``."""
    sys.path.insert(0, str(EXAMPLES))
    sys.path.insert(0, str(REPO))  # the checkout this script lives in
    if not (EXAMPLES / f"{EXAMPLE[framework]}.py").exists():
        out.write_text(json.dumps({"skipped": f"examples/{EXAMPLE[framework]}.py does not exist"}))
        return
    try:
        __import__(framework)
        __import__(f"dict_minimize.{framework}_api")
    except ModuleNotFoundError as err:
        out.write_text(json.dumps({"skipped": f"{type(err).__name__}: {err}"}))
        return
    try:
        if framework == "torch":
            rows, digits = torch_rows(quick)
            result = {"rows": rows, "digits": digits}
        else:
            result = {"rows": other_rows(framework, quick)}
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        result = {"error": f"{type(err).__name__}: {str(err)[:500]} (at {where.filename}:{where.lineno})"}
    out.write_text(json.dumps(result))


# ---------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------


def run_worker(framework: str, quick: bool, threads: int) -> dict:
    return _common.run_worker(__file__, ["--worker", framework] + (["--quick"] if quick else []), threads)


def table(rows: list[dict]) -> str:
    """The Markdown table of the rows.

    Examples
    --------
    >>> row = {"framework": "torch", "model": "mlp", "method": "lbfgs", "test_accuracy": 0.5,
    ...        "wall_time_s": 1.234, "grad_evals": 10, "user_calls": 10, "passes": 10.0}
    >>> print(table([row]).splitlines()[2])
    | torch | mlp | lbfgs | 0.500 | 1.2 | 10 | 10 | 10 |
    """
    def passes(value: float) -> str:
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"

    cells = [
        [r["framework"], r["model"], r["method"], f"{r['test_accuracy']:.3f}", f"{r['wall_time_s']:.1f}",
         str(r["grad_evals"]), str(r.get("user_calls", "")), passes(r["passes"])]
        for r in rows
    ]
    return markdown_table(HEADER, cells, right=HEADER[3:])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 training samples, 20 iterations")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--threads", type=int, default=1, help="thread-pool cap per worker (0: no cap)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the raw rows (default: benchmarks/results/training.json, "
                             "training_quick.json with --quick)")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 (no cap) or positive")
    if args.json is None:
        args.json = RESULTS / ("training_quick.json" if args.quick else "training.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args.quick, args.out)
        return 0
    started = time.perf_counter()
    rows, digits, notes, failed = [], None, [], False
    for framework in args.frameworks:
        print(f"{framework} ...", file=sys.stderr, flush=True)
        result = run_worker(framework, args.quick, args.threads)
        if "error" in result:
            failed = True
            notes.append(f"{framework}: FAILED: {result['error']}")
        elif "skipped" in result:
            notes.append(f"{framework}: skipped ({result['skipped']})")
        else:
            rows += result["rows"]
            digits = result.get("digits", digits)
    size = "quick (400 training samples, 20 iterations)" if args.quick else "full size"
    print(f"Training benchmark, {size}, {datetime.date.today().isoformat()}; "
          f"{machine()}; threads per worker: {args.threads or 'framework default'}\n")
    print(table(rows))
    if digits is not None:
        print(f"\ndigits logistic regression (C=1): dict_minimize loss {digits['loss_dict_minimize']:.12f}, "
              f"scikit-learn {digits['loss_sklearn']:.12f}, relative difference "
              f"{digits['relative_difference']:.1e} ({digits['nit']} iterations, "
              f"{digits['wall_time_s']:.1f} s)")
    for note in notes:
        print(note)
    print(f"\n(total {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json and not args.worker:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": _common.command_line(), "date": datetime.datetime.now().astimezone().isoformat(
                timespec="seconds"), "machine": machine(), "size": size, "threads": args.threads,
            "rows": rows, "digits": digits, "notes": notes}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
