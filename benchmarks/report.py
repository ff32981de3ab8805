"""The README's and docs' benchmark tables, generated from the committed raw results.

Every figure in those tables comes from a file under ``benchmarks/results/``
that a named command wrote (the command is in the file and in the table's
caption). The tables sit between marker comments::

    <!-- table:overhead -->
    ...generated...
    <!-- /table:overhead -->

Usage::

    python benchmarks/report.py            # rewrite the blocks in README.md and docs/curvature.md
    python benchmarks/report.py --check    # exit 1 if a block differs from what the results give

``tests/test_report.py`` runs the check, so a table cannot drift from its data.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from _common import markdown_table  # noqa: E402


def _module(name: str):
    """A benchmark script as a module (for its summary and report functions; nothing runs)."""
    qualified = f"dict_minimize_benchmark_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _provenance(data: dict, name: str) -> str:
    source = data.get("transcribed")
    where = f"`benchmarks/results/{name}.json`"
    if source:
        return f"{source}; {where}, from `{data['command']}` on {data['machine']}"
    return f"`{data['command']}`, {data['date']}, {data['machine']}; raw output {where}"


def _sci(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if n == 10**exponent else str(n)


# ---- overhead ---------------------------------------------------------------


def overhead_table(data: dict) -> str:
    overhead = _module("overhead")
    header = ["backend", "dtype", "K keys", "n", "iterations", "evaluations", "user calls", "wall ratio",
              "95% interval", "CPU ratio", "target", "verdict", "noise"]
    rows = []
    for case in data["cases"]:
        s = overhead.summarize(case)
        evals = "/".join(map(str, s["nfev"]))
        verdict = "pass" if s["passed"] else ("not comparable" if not s["comparable"] else "fail")
        if s["comparable"] and not s.get("conclusive", True):
            verdict += " (not conclusive)"
        low, high = s["ratio_ci95"]
        calls = "/".join(map(str, s.get("user_calls", []))) or "not counted"
        iterations = "/".join(map(str, s["nit"]))
        rows.append([case["backend"], case["dtype"], case["keys"], _sci(case["n"]), iterations, evals, calls,
                     f"{s['ratio']:.3f}", f"{low:.3f}-{high:.3f}", f"{s['cpu_ratio']:.3f}", f"<= {s['target']}",
                     verdict, f"{100 * s['noise']:.0f}%"])
    passed = sum(r[11].startswith("pass") for r in rows)
    settled = sum(r[11] in ("pass", "fail") for r in rows)
    noise = sorted(float(r[12].rstrip("%")) for r in rows)
    lines = [
        f"Measured by {_provenance(data, 'overhead')}; {data['repeats']} interleaved pairs of runs "
        f"after a warm-up run per side, threads capped at {data['threads'] or 'the frameworks default'}.",
        "",
        markdown_table(header, rows, right=header[2:11] + ["noise"]),
        "",
        f"{passed} of {len(rows)} cases within target ({settled} of the {len(rows)} verdicts conclusive). "
        "Wall ratio: the median of the per-pair wrapper / baseline ratios, the verdict; 95% interval: "
        "the sign test's distribution-free 95% confidence interval for that median (a verdict is not "
        "conclusive when the target lies inside it). "
        "Evaluations: SciPy's nfev of both sides "
        "(one number: equal; `a/b`: the runs differed). User calls: how often the user's function really "
        "ran, on both sides, in every run (counted in Python for the eager backends; not counted inside "
        "JAX's and TensorFlow's compiled functions, where a counter would add a host callback to the "
        "timed work). Noise: (max - min) / median of a side's wall "
        f"times, the larger side (median {noise[len(noise) // 2]:.0f}%, worst {noise[-1]:.0f}% in this run): "
        "the pairing cancels a slow drift, not a neighbour's burst within one run.",
    ]
    for line in data.get("skipped", []) + data.get("errors", []):
        lines.append(f"- {line}")
    return "\n".join(lines)


def overhead_full(data: dict) -> str:
    """``overhead.py``'s own report (both tables) of the committed run, for benchmarks/README.md."""
    overhead = _module("overhead")
    problems = list(data.get("errors", []))
    for case in data["cases"]:
        case["summary"] = overhead.summarize(case)
    return (f"Measured by {_provenance(data, 'overhead')}.\n\n"
            + overhead.report(data["cases"], data.get("skipped", []) + problems, data["repeats"],
                              data["threads"]))


# ---- training ---------------------------------------------------------------

TRAINING_TUNING = (
    "What each side was tuned with: L-BFGS-B runs SciPy's defaults with `maxiter` 1500 (stochastic: the "
    "batch schedule of `examples/mnist1d_torch.py`); the weight decay (MLP 6e-3, written `3e-3 * ||W||^2` "
    "in the TensorFlow and JAX examples; CNN 1e-3) is the best of a few values tried with full-batch "
    "L-BFGS-B. Adam uses the MNIST-1D repository's settings (learning rate 1e-2, minibatches of 100), not "
    "tuned here, on the same objective; `adam` gets as many steps as the same model's `lbfgs` run made "
    "gradient evaluations, `adam, repository's budget` the repository's 6000 steps. Equal gradient "
    "evaluations are not equal work: see the passes column."
)


def _training_rows(data: dict) -> str:
    training = _module("training")
    return training.table(data["rows"])


def training_full(full: dict) -> str:
    """The full-size table with its digits line, for examples/README.md."""
    digits = full["digits"]
    return "\n".join([
        f"{_provenance(full, 'training')}. Loss calls were not counted in that run.", "",
        _training_rows(full), "",
        f"digits logistic regression (C=1): dict_minimize loss {digits['loss_dict_minimize']:.12f}, "
        f"scikit-learn {digits['loss_sklearn']:.12f}, "
        f"relative difference {digits['relative_difference']:.1e} "
        f"({digits['nit']} L-BFGS-B iterations, {digits['wall_time_s']:.1f} s).",
    ])


def training_table(full: dict, quick: dict) -> str:
    digits = quick["digits"]
    lines = [
        f"Full size, {full['size']}: {_provenance(full, 'training')}. Every row the benchmark prints, "
        "those where Adam wins included. Loss calls were not counted in that run.",
        "",
        _training_rows(full),
        "",
        f"Re-measured at reduced size, {quick['size'].removeprefix('quick ').strip('()')} "
        "(Adam's budgets too): "
        f"{_provenance(quick, 'training_quick')}. "
        "Loss calls: how often the loss function really ran (a host callback inside the compiled "
        "function for TensorFlow and JAX), against SciPy's nfev (Adam: its steps) in the "
        "gradient-evaluations column; "
        "one call per evaluation is the target. At this size the accuracies say nothing about the "
        "methods; they show the rows run.",
        "",
        _training_rows(quick),
        "",
        TRAINING_TUNING,
        "",
        f"Scikit-learn's digits (full size, in the run above): `examples/digits_logistic.py` reaches loss "
        f"{digits['loss_dict_minimize']:.12f} against `LogisticRegression(solver=\"lbfgs\")`'s "
        f"{digits['loss_sklearn']:.12f} on the same objective, a relative difference of "
        f"{digits['relative_difference']:.1e} ({digits['nit']} L-BFGS-B iterations); "
        "`tests/test_examples_training.py` holds it below 2e-10.",
    ]
    return "\n".join(lines)


# ---- curvature --------------------------------------------------------------


def curvature_summary(data: dict) -> str:
    """The README's short table: per problem, autodiff against the finite-difference variant."""
    by_problem: dict[str, list[dict]] = {}
    for row in data["rows"].get("fd", []):
        by_problem.setdefault(row["problem"], []).append(row)

    def cell(r: dict) -> str:
        calls = f"{r['objective_calls']:,} / {r['constraint_calls']:,}" if r["constraint_calls"] else \
            f"{r['objective_calls']:,}"
        verdict = "" if r["success"] else f', "{r["message"].split(".")[0][:60]}"'
        times = f"{r['wall_s']:.3f} s wall / {r['cpu_s']:.3f} s CPU"
        return f"{calls} calls, {times}{verdict} ({r['variant']})"

    rows = [[problem, rs[0]["method"], cell(rs[0]), cell(rs[-1])] for problem, rs in by_problem.items()]
    header = ["problem", "method", "autodiff", "finite differences"]
    lines = [
        f"Measured by {_provenance(data, 'curvature')}. Calls: how often the objective (/ the "
        "constraint functions) really ran; median wall and CPU time of "
        f"{data['repeats']} runs (wall time counts the waits of a loaded machine; CPU time does not). "
        "Every variant, the logistic-regression and the Hessian-vector-product tables: "
        "[docs/curvature.md](docs/curvature.md).",
        "",
        markdown_table(header, rows),
    ]
    return "\n".join(lines)


def curvature_report(data: dict) -> str:
    curvature = _module("curvature")
    return (f"Command: `{data['command']}`; raw output `benchmarks/results/curvature.json`.\n\n"
            + curvature.report(data))


# ---- the blocks ---------------------------------------------------------------


def dropin_table(data: dict) -> str:
    """``dropin_pairs.py``'s table: a flat ndarray x0 against SciPy itself, per size."""
    pairs = _module("dropin_pairs")
    return "\n".join([
        f"Measured by {_provenance(data, 'dropin_pairs')}.",
        "",
        pairs.report(data),
        "",
        "Each row: L-BFGS-B on the chained Rosenbrock function with its analytic gradient "
        "(`jac=True`), zero tolerances so every side stops on `maxiter`, the same iterations and "
        "evaluations on every side; in each of several fresh processes (one thread), interleaved "
        "rounds of runs (ABBA) of SciPy, the default drop-in (which, as SciPy, records no "
        "`res.history` for a flat ndarray) and the drop-in with `history=True`. Ratio: the median "
        "over the processes of each process's median wall ratio (numpy_api / SciPy); 95% interval: the sign test's distribution-free "
        "interval for it over the processes (with six processes, their range); "
        "the verdict is where that interval lies against the target.",
    ])


def blocks() -> dict[tuple[str, str], Callable[[], str]]:
    """(file, marker name) -> the function that makes its content."""
    return {
        ("README.md", "overhead"): lambda: overhead_table(load("overhead")),
        ("README.md", "dropin"): lambda: dropin_table(load("dropin_pairs")),
        ("benchmarks/README.md", "overhead"): lambda: overhead_full(load("overhead")),
        ("README.md", "training"): lambda: training_table(load("training"), load("training_quick")),
        ("README.md", "curvature"): lambda: curvature_summary(load("curvature")),
        ("examples/README.md", "training"): lambda: training_full(load("training")),
        ("docs/curvature.md", "curvature"): lambda: curvature_report(load("curvature")),
    }


def replace_block(text: str, name: str, content: str, path: str = "") -> str:
    """``text`` with the block between ``<!-- table:name -->`` and ``<!-- /table:name -->`` replaced.

    Examples
    --------
    >>> replace_block("a\\n<!-- table:t -->\\nold\\n<!-- /table:t -->\\nb", "t", "new")
    'a\\n<!-- table:t -->\\nnew\\n<!-- /table:t -->\\nb'
    """
    tag = re.escape(name)
    pattern = re.compile(rf"(<!-- table:{tag} -->\n).*?(<!-- /table:{tag} -->)", re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"{path or 'text'}: expected one "
                         f"<!-- table:{name} --> ... <!-- /table:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(2), text)


def render() -> dict[str, str]:
    """Every file with its blocks regenerated: path -> new text."""
    out: dict[str, str] = {}
    for (path, name), make in blocks().items():
        text = out.get(path, (REPO / path).read_text())
        out[path] = replace_block(text, name, make(), path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if (REPO / path).read_text() != text:
            stale.append(path)
            if not args.check:
                (REPO / path).write_text(text)
    if args.check and stale:
        print(f"out of date (run python benchmarks/report.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{'checked' if args.check else 'rewrote'}: {', '.join(stale) or 'nothing to change'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
