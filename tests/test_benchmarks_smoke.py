"""Smoke test of ``benchmarks/overhead.py``: it runs, prints a table, and compares like with like.

No timing is asserted: the figures depend on the machine. What must hold
anywhere is that the wrapper and the baseline did the same number of
iterations and evaluations, or the ratio means nothing.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BACKENDS

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "overhead.py"


def _overhead_module():
    name = "dict_minimize_benchmark_overhead"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path for _common
    return module


overhead = _overhead_module()
_common = sys.modules["_common"]  # benchmarks/_common.py, imported by overhead.py


def run_quick(backends: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--backends", ",".join(backends),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.exists(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def table_rows(stdout: str) -> list[list[str]]:
    """Cells of the main table's data rows (the first table printed)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| backend | dtype |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def check_like_for_like(proc, data, backends):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    expected = {(b, d, k) for b in backends for d in overhead.DTYPES for k in overhead.QUICK_KEYS}
    assert {(r["backend"], r["dtype"], int(r["K"])) for r in rows} == expected
    (iterations,) = overhead.QUICK_SIZES.values()
    for row in rows:
        # One number (not "wrapper/baseline"): both sides did the same.
        assert row["iterations"] == str(iterations), row
        assert float(row["ratio"]) > 0 and row["pass/fail"] in ("pass", "fail"), row
        if row["backend"] not in overhead.COMPILED:
            assert row["evals"].isdigit(), row
    assert len(data["cases"]) == len(expected)
    for case in data["cases"]:
        runs = case["repeats"] + 1  # the warm-up run is checked too
        assert len(case["wrapper_nit"]) == len(case["baseline_nit"]) == runs
        assert set(case["wrapper_nit"]) == set(case["baseline_nit"]) == {iterations}
        nfevs = case["wrapper_nfev"] + case["baseline_nfev"]
        if case["backend"] in overhead.COMPILED:  # separately compiled: rounding may differ
            assert max(nfevs) <= (1 + overhead.EVALS_TOLERANCE) * min(nfevs), case
            assert case["wrapper_fun"][0] == pytest.approx(case["baseline_fun"][0], rel=1e-3)
        else:  # the same arithmetic on both sides: the same path
            assert len(set(nfevs)) == 1, case
            assert case["wrapper_fun"] == case["baseline_fun"]


def test_quick_numpy(tmp_path):
    proc, data = run_quick(["numpy"], tmp_path)
    check_like_for_like(proc, data, ["numpy"])


@pytest.mark.slow
def test_quick_every_backend(tmp_path):
    backends = [b for b in overhead.BACKENDS if b in BACKENDS]
    proc, data = run_quick(backends, tmp_path)
    check_like_for_like(proc, data, backends)


def _record(backend: str, wrapper_nfev: list, baseline_nfev: list) -> dict:
    return {
        "backend": backend, "n": 1000,
        "wrapper_s": [2.0, 2.2], "baseline_s": [1.0, 1.0],
        "wrapper_cpu_s": [1.8, 2.0], "baseline_cpu_s": [1.0, 1.0],
        "wrapper_nit": [10, 10, 10], "baseline_nit": [10, 10, 10],
        "wrapper_nfev": wrapper_nfev, "baseline_nfev": baseline_nfev,
        "wrapper_warmup_s": 3.0, "baseline_warmup_s": 1.0,
    }


def test_summary_ratio_and_verdict():
    summary = overhead.summarize(_record("torch", [12, 12, 12], [12, 12, 12]))
    assert summary["ratio"] == pytest.approx(2.1)
    assert summary["cpu_ratio"] == pytest.approx(1.9)
    assert summary["overhead_per_eval_s"] == pytest.approx(1.1 / 12)
    assert summary["comparable"] and not summary["passed"]  # 2.1 > 1.3


def test_summary_flags_a_mismatch():
    # Eager backends run the same arithmetic on both sides: one evaluation apart is a mismatch.
    summary = overhead.summarize(_record("numpy", [12, 12, 12], [12, 12, 13]))
    assert summary["nfev"] == [12, 13]
    assert not summary["comparable"] and not summary["passed"]
    # Compiled backends may round differently: a few percent is tolerated, more is not.
    assert overhead.summarize(_record("jax", [225] * 3, [229] * 3))["comparable"]
    assert not overhead.summarize(_record("jax", [200] * 3, [229] * 3))["comparable"]
    record = _record("tensorflow", [12] * 3, [12] * 3)
    record["baseline_nit"] = [10, 9, 10]
    assert not overhead.summarize(record)["comparable"]


def test_summary_paired_median_and_conclusiveness():
    record = _record("torch", [12] * 3, [12] * 3)
    record["wrapper_s"], record["baseline_s"] = [1.0, 1.2, 1.4, 3.0], [1.0, 1.0, 1.0, 1.0]
    summary = overhead.summarize(record)
    assert summary["ratio"] == pytest.approx(1.3)  # the median of the pairs, not of the sides' medians
    low, high = summary["ratio_ci95"]
    assert low < 1.3 < high and not summary["conclusive"]
    record["wrapper_s"] = [1.0, 1.02, 1.04, 1.06]
    assert overhead.summarize(record)["conclusive"]  # all far below 1.3
    # Many pairs close to the target: the median's interval, not the pairs' spread, decides.
    ratios = [1.2 + 0.08 * ((7 * i) % 11 - 5) / 5 for i in range(121)]  # 1.12 .. 1.28, median 1.2
    record["wrapper_s"], record["baseline_s"] = ratios, [1.0] * len(ratios)
    summary = overhead.summarize(record)
    assert summary["ratio_interquartile"][1] > 1.22 and summary["ratio_ci95"][1] < 1.3
    assert summary["passed"] and summary["conclusive"]


def test_median_ci_covers_the_median_at_its_level():
    rng = random.Random(0)
    for n in (6, 20, 101):
        hits = 0
        for _ in range(2000):
            low, high = _common.median_ci([rng.gauss(0.0, 1.0) for _ in range(n)])
            hits += low <= 0.0 <= high
        assert 0.93 <= hits / 2000 <= 0.99  # exact coverage: 0.969, 0.959, 0.954 for these n
    assert _common.median_ci([3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        _common.median_ci([])


def test_focused_cases_select_only_those():
    only = overhead.parse_cases("numpy:float64:0:1000, torch:float32:2:1e6")
    assert [(c.keys, c.n) for c in overhead.cases_for("numpy", "float64", False, only)] == [(0, 1000)]
    assert [(c.keys, c.n) for c in overhead.cases_for("torch", "float32", False, only)] == [(2, 1_000_000)]
    assert overhead.cases_for("jax", "float32", False, only) == []
    assert len(overhead.cases_for("numpy", "float64", False)) == 6
    with pytest.raises(SystemExit):
        overhead.parse_args(["--cases", "numpy:float64:0"])
    assert overhead.parse_args(["--cases", "numpy:float64:0:1000"]).json.name == "overhead_focused.json"


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        overhead.parse_args(["--backends", "numpy,caffe"])
    with pytest.raises(SystemExit):
        overhead.parse_args(["--repeats", "0"])
    assert overhead.parse_args(["--quick"]).repeats == overhead.DEFAULT_REPEATS["quick"]


def test_dropin_pairs_runs_equal_work(capsys, tmp_path):
    """The paired check compares like with like (equal nit/nfev), one process per observation."""
    import importlib.util

    path = SCRIPT.parent / "dropin_pairs.py"
    spec = importlib.util.spec_from_file_location("dropin_pairs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out_json = tmp_path / "pairs.json"
    status = module.main(["--n", "50", "--pairs", "2", "--maxiter", "5", "--processes", "2",
                          "--json", str(out_json)])
    assert status in (0, 2)  # 2: over the target, which a 2-pair run on a busy machine may be
    data = json.loads(out_json.read_text())
    (size,) = data["sizes"]
    assert size["n"] == 50 and len(size["processes"]) == 2
    for proc in size["processes"]:
        assert proc["counts"] == [[5, proc["counts"][0][1]]]  # every side: 5 iterations, equal nfev
        assert len(proc["wall"]) == len(proc["cpu"]) == len(proc["wall_history"]) == 2
    for variant in module.VARIANTS:
        summary = module.summarize(size["processes"], variant)
        assert 0.1 < summary["median"] < 10 and summary["verdict"] in ("within", "over", "not settled")
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 50 | 5 |"))
    assert row.count(" 1.05x |") == 2  # the table's row for n = 50, with both variants' verdicts


def test_dropin_pairs_verdict_is_on_the_processes_medians():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dropin_pairs", SCRIPT.parent / "dropin_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    proc = {"counts": [[5, 6]], "scipy_median_s": 1.0}
    within = [dict(proc, wall=[1.0, 1.01, 1.02], cpu=[1.0] * 3) for _ in range(6)]
    assert module.summarize(within)["verdict"] == "within"
    # One process over the target among six: the interval over processes (their range) reaches it.
    straddling = within[:5] + [dict(proc, wall=[1.08, 1.09, 1.1], cpu=[1.0] * 3)]
    assert module.summarize(straddling)["verdict"] == "not settled"
    over = [dict(proc, wall=[1.2, 1.3, 1.25], cpu=[1.0] * 3) for _ in range(6)]
    assert module.summarize(over)["verdict"] == "over"