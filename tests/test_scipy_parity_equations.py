"""numpy_api.least_squares and numpy_api.root are drop-ins for SciPy's.

SciPy's own test files for them run twice in a subprocess, once as they are
and once with ``least_squares`` (or ``root``) replaced by numpy_api's
everywhere SciPy's tests reach it (``curve_fit`` with bounds calls
``least_squares`` too); every test that passes unpatched must pass patched,
except the short list of deliberate deviations below. Run with ``-s`` to see
the counts, and how many passing tests reached the patched function.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy
import scipy.optimize

from dict_minimize import numpy_api

REPO_ROOT = Path(__file__).resolve().parents[1]
SCIPY_TESTS = Path(scipy.__file__).parent / "optimize" / "tests"

# function -> the modules that define it (their attribute is patched) and SciPy's test files that call it
TARGETS = {
    "least_squares": (["scipy.optimize", "scipy.optimize._lsq", "scipy.optimize._minpack_py"],
                      ["test_least_squares.py", "test_minpack.py"]),
    "root": (["scipy.optimize", "scipy.optimize._root"],
             ["test__root.py", "test__spectral.py", "test_minpack.py", "test_nonlin.py"]),
}

# Tests that fail patched by design (DESIGN.md departs from SciPy there).
BY_DESIGN = {
    "test_x0_multidimensional": "N-d arrays are accepted as x0 (SciPy alone rejects them)",
    "test_fun_wrong_dimensions": "residuals may have any shape (SciPy alone rejects 2-d ones)",
}

PLUGIN = '''
"""pytest plugin: every `{name}` SciPy's tests reach is dict_minimize.numpy_api.{name}."""
import functools
import importlib
import json
import os

from dict_minimize import numpy_api  # binds SciPy's own functions before they are patched

_ours = numpy_api.{name}
_originals = {{m: getattr(importlib.import_module(m), "{name}") for m in {modules!r}}}
_reached = set()
_current = [None]


@functools.wraps(_ours)
def patched(*args, **kwargs):
    _reached.add(_current[0])
    return _ours(*args, **kwargs)


for _m in _originals:
    setattr(importlib.import_module(_m), "{name}", patched)


def pytest_collection_modifyitems(session, config, items):
    # A test module that bound the name itself (`from scipy.optimize import {name}`).
    for module in {{item.module for item in items if getattr(item, "module", None) is not None}}:
        if getattr(module, "{name}", None) in _originals.values():
            module.{name} = patched


def pytest_runtest_call(item):
    _current[0] = item.nodeid


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["DM_REACHED"], "w") as f:
        json.dump(sorted(r for r in _reached if r), f)
'''


def run_scipy_file(tmp_path: Path, name: str, test_file: str, patched: bool, select: str | None):
    """One SciPy test file in a subprocess: (passed ids, failed ids, ids that reached the patched one)."""
    modules, _ = TARGETS[name]
    plugin = f"dm_patch_{name}"
    (tmp_path / f"{plugin}.py").write_text(textwrap.dedent(PLUGIN.format(name=name, modules=modules)))
    report = tmp_path / f"{name}-{test_file}-{patched}.txt"
    reached = tmp_path / f"{name}-{test_file}-reached.json"
    cmd = [sys.executable, "-m", "pytest", str(SCIPY_TESTS / test_file), "-q", "-rA",
           "-p", "no:cacheprovider", "-p", "no:randomly"]
    if patched:
        cmd += ["-p", plugin]
    if select:
        cmd += ["-k", select]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
               DM_REACHED=str(reached), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    text = out.stdout + out.stderr
    report.write_text(text)
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    assert summary, text[-3000:]
    passed = set(re.findall(r"^PASSED (\S+)", text, flags=re.MULTILINE))
    failed = set(re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.MULTILINE))
    hits = set(json.loads(reached.read_text())) if patched and reached.exists() else set()
    return passed, failed, hits


def _short(nodeid: str) -> str:
    return nodeid.split("::", 1)[-1]


def _by_design(nodeid: str) -> bool:
    return nodeid.split("::")[-1].split("[")[0] in BY_DESIGN


def compare(tmp_path, name: str, test_file: str, select: str | None = None):
    base_passed, _, _ = run_scipy_file(tmp_path, name, test_file, patched=False, select=select)
    ours_passed, ours_failed, hits = run_scipy_file(tmp_path, name, test_file, patched=True, select=select)
    # Names only: the file's path differs between the runs' node ids only by prefix.
    base, ours = {_short(t) for t in base_passed}, {_short(t) for t in ours_passed}
    lost = sorted(base - ours)
    by_design = [t for t in lost if _by_design(t)]
    regressions = [t for t in lost if not _by_design(t)]
    reached = len({_short(t) for t in hits} & ours)
    report = (f"{name} in SciPy's {test_file}{' -k ' + select if select else ''}: "
              f"{len(ours)} passed patched / {len(base)} passed unpatched; {reached} of the patched passes "
              f"call {name}; failing by design: {by_design}; "
              f"regressions ({len(regressions)}): {regressions}; "
              f"failed patched: {len(ours_failed)}")
    print("\n" + report)
    assert base, report  # the unpatched run found tests
    assert not regressions, report
    return report


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_scipy_suite_subset_patched(tmp_path, name):
    """A few seconds' worth: SciPy's tests of each function whose names say so."""
    select = {"least_squares": "TestTRF and (basic or bounds or jac or full_result) or test_callback",
              "root": "TestRoot"}[name]
    compare(tmp_path, name, TARGETS[name][1][0], select)


@pytest.mark.slow
@pytest.mark.parametrize("name, test_file", [(n, f) for n, (_, files) in TARGETS.items() for f in files])
def test_scipy_suite_patched(tmp_path, name, test_file):
    """Every test of each of SciPy's files that call the function (~2 minutes for all)."""
    compare(tmp_path, name, test_file)


def test_monkeypatching_scipy_does_not_recurse(monkeypatch):
    """With SciPy's own names replaced by ours, ours still reach SciPy's."""
    monkeypatch.setattr(scipy.optimize, "least_squares", numpy_api.least_squares)
    monkeypatch.setattr(scipy.optimize, "root", numpy_api.root)
    res = scipy.optimize.least_squares(lambda x: x - 3.0, np.zeros(2))
    np.testing.assert_allclose(res.x, 3.0)
    sol = scipy.optimize.root(lambda x: x**3 - 8.0, np.ones(2))
    np.testing.assert_allclose(sol.x, 2.0)


@pytest.mark.parametrize("kwargs", [{}, {"method": "lm"}, {"method": "dogbox", "bounds": (0.0, 2.0)},
                                    {"jac": "3-point", "loss": "soft_l1"}, {"x_scale": "jac"}],
                         ids=["trf", "lm", "dogbox-bounds", "3-point-soft_l1", "x_scale-jac"])
def test_least_squares_identical_to_scipy(kwargs):
    """Same x, cost, nfev, njev, status bit for bit on a flat ndarray x0."""
    t = np.linspace(0, 1, 30)

    def fun(p):
        return p[0] * np.exp(-p[1] * t) + p[2] - np.cos(t)

    x0 = np.array([1.0, 1.0, 0.5])
    ref = scipy.optimize.least_squares(fun, x0, **kwargs)
    ours = numpy_api.least_squares(fun, x0, **kwargs)
    for key in ("x", "cost", "fun", "jac", "grad", "optimality", "active_mask", "nfev", "njev", "status",
                "message", "success"):
        np.testing.assert_equal(ours[key], ref[key], err_msg=key)


@pytest.mark.parametrize("method", ["hybr", "lm", "broyden1", "krylov", "df-sane"])
def test_root_identical_to_scipy(method):
    def fun(x):
        return np.array([x[0] + 0.5 * (x[0] - x[1]) ** 3 - 1.0, 0.5 * (x[1] - x[0]) ** 3 + x[1]])

    x0 = np.array([0.1, 0.0])
    ref = scipy.optimize.root(fun, x0, method=method)
    ours = numpy_api.root(fun, x0, method=method)
    np.testing.assert_array_equal(ours.x, ref.x)
    np.testing.assert_array_equal(ours.fun, ref.fun)
    for key in ("success", "status", "nfev", "nit", "message"):
        if key in ref:
            assert ours[key] == ref[key], key
