"""numpy_api is a drop-in for scipy.optimize.minimize.

(a) With a plain array x0 and SciPy-style arguments, every SciPy method gives
    exactly SciPy's result (x, nit, nfev, ... bit for bit).
(b) SciPy's own test suite for ``minimize`` (``scipy/optimize/tests/test_optimize.py``
    in the installed SciPy) passes as well with ``minimize`` replaced by
    ``dict_minimize.numpy_api.minimize``. Run with ``-s`` to see both counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import scipy
import scipy.optimize
from scipy.optimize import (BFGS, Bounds, HessianUpdateStrategy, LinearConstraint, NonlinearConstraint,
                            rosen, rosen_der, rosen_hess, rosen_hess_prod)
from scipy.optimize._minimize import MINIMIZE_METHODS

from dict_minimize import numpy_api

REPO_ROOT = Path(__file__).resolve().parents[1]
X0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])  # SciPy's tutorial start
X0_CONVEX = np.array([1.2, 1.3, 1.5])  # Rosenbrock's Hessian is positive definite here
BOUNDS_PAIRS = [(0.0, 1.5), (-1.0, 2.0), (0.5, 1.0), (-np.inf, np.inf), (1.1, 3.0)]
BOUNDS = Bounds([b[0] for b in BOUNDS_PAIRS], [b[1] for b in BOUNDS_PAIRS])
INEQ = {"type": "ineq", "fun": lambda x: 4.0 - np.sum(x), "jac": lambda x: -np.ones_like(x)}
EQ = {"type": "eq", "fun": lambda x: x[0] - 1.1 * x[1], "jac": lambda x: np.array([1.0, -1.1, 0, 0, 0])}
NONLINEAR = NonlinearConstraint(lambda x: x[0] ** 2 + x[1] ** 2, 0.0, 2.0,
                                jac=lambda x: np.array([[2 * x[0], 2 * x[1], 0, 0, 0]]))
LINEAR = LinearConstraint(np.ones((1, 5)), -np.inf, 6.0)


# method -> {case name: keyword arguments}
CASES = {
    "nelder-mead": {"plain": {}, "bounds": {"bounds": BOUNDS}},
    "powell": {"plain": {}, "bounds": {"bounds": BOUNDS},
               "pairs-with-none": {"bounds": [(None, 1.5), (-1.0, None), (0.5, 1.0), (None, None),
                                              (1.1, 3.0)]}},
    "cg": {"jac": {"jac": rosen_der}, "fd": {}},
    "bfgs": {"jac": {"jac": rosen_der}, "fd": {}, "3-point": {"jac": "3-point"}, "cs": {"jac": "cs"}},
    "newton-cg": {"hess": {"jac": rosen_der, "hess": rosen_hess},
                  "hessp": {"jac": rosen_der, "hessp": rosen_hess_prod},
                  "hess-2-point": {"jac": rosen_der, "hess": "2-point"}},
    "l-bfgs-b": {"jac": {"jac": rosen_der, "bounds": BOUNDS}, "fd": {"bounds": BOUNDS_PAIRS}, "plain": {}},
    "tnc": {"jac": {"jac": rosen_der, "bounds": BOUNDS}, "fd": {}},
    "cobyla": {"ineq": {"constraints": [INEQ]}, "bounds": {"constraints": INEQ, "bounds": BOUNDS}},
    "cobyqa": {"bounds+constraints": {"bounds": BOUNDS, "constraints": [NONLINEAR],
                                      "options": {"maxfev": 300}}},
    "slsqp": {"eq+ineq": {"jac": rosen_der, "bounds": BOUNDS, "constraints": [EQ, INEQ]}, "fd": {}},
    "trust-constr": {
        "hess": {"jac": rosen_der, "hess": rosen_hess, "bounds": BOUNDS, "constraints": [NONLINEAR, LINEAR]},
        "bfgs": {"jac": rosen_der, "hess": BFGS()},
        "hessp": {"jac": rosen_der, "hessp": rosen_hess_prod, "constraints": LINEAR},
    },
    "dogleg": {"hess": {"jac": rosen_der, "hess": rosen_hess}},
    "trust-ncg": {"hess": {"jac": rosen_der, "hess": rosen_hess},
                  "hessp": {"jac": rosen_der, "hessp": rosen_hess_prod}},
    "trust-exact": {"hess": {"jac": rosen_der, "hess": rosen_hess}},
    "trust-krylov": {"hessp": {"jac": rosen_der, "hessp": rosen_hess_prod}},
}
COMPARED = ("nit", "nfev", "njev", "nhev", "status", "success", "message", "fun", "jac", "grad",
            "constr_violation", "maxcv", "niter", "cg_niter")


def case_params():
    params = []
    for method in MINIMIZE_METHODS:
        for name, kwargs in CASES[method].items():
            params.append(pytest.param(method, kwargs, id=f"{method}-{name}"))
    return params


def test_every_scipy_method_has_a_case():
    assert set(CASES) == set(MINIMIZE_METHODS)


def fresh(kwargs):
    """The arguments with a new HessianUpdateStrategy: it keeps state across a run."""
    return {k: type(v)() if isinstance(v, HessianUpdateStrategy) else v for k, v in kwargs.items()}


def run_both(method, kwargs, x0):
    """SciPy's result and ours, on identical fresh inputs; x0 checked untouched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = scipy.optimize.minimize(rosen, np.array(x0), method=method, **fresh(kwargs))
        x0_ours = np.array(x0)
        ours = numpy_api.minimize(rosen, x0_ours, method=method, **fresh(kwargs))
    np.testing.assert_array_equal(x0_ours, x0)
    return ref, ours


def assert_identical(ref, ours):
    assert isinstance(ours.x, np.ndarray) and ours.x.dtype == ref.x.dtype and ours.x.shape == ref.x.shape
    np.testing.assert_array_equal(ours.x, ref.x)
    for key in COMPARED:
        if key in ref:
            assert key in ours, key
            np.testing.assert_equal(ours[key], ref[key], err_msg=key)  # lists of arrays too
    assert type(ours.fun) is float


@pytest.mark.parametrize("method, kwargs", case_params())
def test_identical_to_scipy(method, kwargs):
    x0 = X0_CONVEX if method in ("dogleg", "trust-exact") else X0
    ref, ours = run_both(method, kwargs, x0)
    assert_identical(ref, ours)


@pytest.mark.parametrize("x0", [[1, 2, 3], 2.5, np.array([3, -1], dtype=np.int64), (0.5, 1.5)],
                         ids=["int-list", "scalar", "int-array", "tuple"])
def test_scipy_x0_spellings(x0):
    """What NumPy reads as one numeric array is one leaf, as SciPy treats it."""
    ref, ours = run_both("BFGS", {"jac": rosen_der} if np.size(x0) > 1 else {}, x0)
    assert_identical(ref, ours)


def test_args_tol_and_callback_match():
    def fun(x, shift, scale):
        return scale * rosen(x - shift)

    seen_ref, seen_ours = [], []
    kwargs = dict(args=(0.1, 2.0), tol=1e-10, method="L-BFGS-B")
    ref = scipy.optimize.minimize(fun, X0, callback=lambda xk: seen_ref.append(xk.copy()), **kwargs)
    ours = numpy_api.minimize(fun, X0, callback=lambda xk: seen_ours.append(xk.copy()), **kwargs)
    assert_identical(ref, ours)
    np.testing.assert_array_equal(np.array(seen_ours), np.array(seen_ref))


def test_callback_stop_matches():
    def stop_on_third(calls):
        def callback(intermediate_result):
            calls.append(intermediate_result.fun)
            if len(calls) == 3:
                raise StopIteration

        return callback

    ref_calls, our_calls = [], []
    ref = scipy.optimize.minimize(rosen, X0, method="BFGS", jac=rosen_der, callback=stop_on_third(ref_calls))
    ours = numpy_api.minimize(rosen, X0, method="BFGS", jac=rosen_der, callback=stop_on_third(our_calls))
    assert_identical(ref, ours)
    assert our_calls == ref_calls


def test_monkeypatching_scipy_minimize_does_not_recurse(monkeypatch):
    monkeypatch.setattr(scipy.optimize, "minimize", numpy_api.minimize)
    res = scipy.optimize.minimize(rosen, X0, method="BFGS", jac=rosen_der)
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)


# ---- (b) SciPy's own test suites, patched ---------------------------------------------------

SCIPY_TESTS = Path(scipy.__file__).parent / "optimize" / "tests"

#: Every SciPy test file that reaches ``minimize`` (directly, or through basinhopping,
#: shgo, dual_annealing and differential_evolution's polishing; test_trustregion_krylov,
#: test_trustregion_exact, test_hessian_update_strategy, test_regression and
#: test_constraints pass both ways but never call it). The quick ones (a few seconds for
#: both runs) are in the default run, the rest are ``slow``.
MINIMIZE_SUITES = {
    "test_optimize.py": "slow",
    "test_minimize_constrained.py": "quick",
    "test_constraint_conversion.py": "quick",
    "test_trustregion.py": "quick",
    "test_slsqp.py": "quick",
    "test_cobyla.py": "quick",
    "test_cobyqa.py": "quick",
    "test_lbfgsb_hessinv.py": "quick",
    "test_lbfgsb_setulb.py": "quick",
    "test_tnc.py": "quick",
    "test__basinhopping.py": "slow",
    "test__shgo.py": "slow",
    "test__dual_annealing.py": "slow",
    "test__differential_evolution.py": "slow",
}

PLUGIN = """
\"\"\"pytest plugin: every `minimize` SciPy's tests reach is dict_minimize.numpy_api.minimize.\"\"\"
import functools
import json
import os
import sys
import threading

import pytest
import scipy.optimize
import scipy.optimize._minimize

from dict_minimize import numpy_api

_scipy_minimize = scipy.optimize._minimize.minimize
_inside = threading.local()
_count = [0]
_calls = {}


@functools.wraps(numpy_api.minimize)
def minimize(*args, **kwargs):
    # dict_minimize calls scipy.optimize.minimize itself: that call must reach SciPy.
    if getattr(_inside, "active", False):
        return _scipy_minimize(*args, **kwargs)
    _inside.active = True
    _count[0] += 1
    try:
        return numpy_api.minimize(*args, **kwargs)
    finally:
        _inside.active = False


scipy.optimize.minimize = minimize
scipy.optimize._minimize.minimize = minimize


def pytest_collection_modifyitems(session, config, items):
    # Modules that bound the name themselves (`from scipy.optimize import minimize`):
    # the test modules, and SciPy's own global optimizers that call it.
    modules = {item.module for item in items if getattr(item, "module", None) is not None}
    modules |= {m for name, m in list(sys.modules.items()) if name.startswith("scipy.optimize")}
    for module in modules:
        if getattr(module, "minimize", None) is _scipy_minimize:
            module.minimize = minimize


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = _count[0]
    yield
    owner = item.cls.__name__ if item.cls is not None else item.module.__name__.rsplit(".", 1)[-1]
    _calls[f"{owner}::{item.name}"] = _count[0] - before  # junit's classname tail and name


def pytest_sessionfinish(session):
    with open(os.environ["DM_CALLS"], "w") as f:
        json.dump(_calls, f)
"""

# Tests that fail patched by design (DESIGN.md departs from SciPy there).
BY_DESIGN = {
    "test_ndim_error": "N-d arrays are accepted (SciPy alone rejects them)",
}


def run_scipy_suite(tmp_path: Path, test_file: str, patched: bool, select: str | None = None,
                    root: Path = SCIPY_TESTS):
    """Run one test file (SciPy's, or a client's under ``root``) in a subprocess.

    Returns {test id: outcome} and {test id: minimize calls}.
    """
    (tmp_path / "dm_patch.py").write_text(PLUGIN)
    tag = "patched" if patched else "plain"
    junit, calls = tmp_path / f"{tag}.xml", tmp_path / f"{tag}.calls.json"
    cmd = [sys.executable, "-m", "pytest", str(root / test_file), "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    if patched:
        cmd += ["-p", "dm_patch"]
    if select:
        cmd += ["-k", select]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]), DM_CALLS=str(calls))
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert junit.exists(), (out.stdout + out.stderr)[-3000:]
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        owner = case.get("classname").rsplit(".", 1)[-1]
        outcomes[f"{owner}::{case.get('name')}"] = kinds.pop() if kinds else "passed"
    per_test_calls = json.loads(calls.read_text()) if calls.exists() else {}
    return outcomes, per_test_calls


def compare_with_scipy_suite(tmp_path, test_file, select=None, root: Path = SCIPY_TESTS, owner: str = "SciPy"):
    base, _ = run_scipy_suite(tmp_path, test_file, patched=False, select=select, root=root)
    ours, calls = run_scipy_suite(tmp_path, test_file, patched=True, select=select, root=root)
    passing = {t for t, o in base.items() if o == "passed"}
    lost = sorted(t for t in passing if ours.get(t) != "passed")
    by_design = [t for t in lost if t.split("::")[-1].split("[")[0] in BY_DESIGN]
    regressions = [t for t in lost if t not in by_design]
    ours_passed = sum(o == "passed" for o in ours.values())
    # How many of the passing tests reach the patched minimize at all.
    reaching = sum(1 for test, n in calls.items() if n > 0 and test in passing)
    report = (f"{owner} {test_file}{' -k ' + select if select else ''}: patched {ours_passed} passed / "
              f"unpatched {len(passing)} passed; {reaching} of the passing tests call minimize; "
              f"failing by design: {by_design}; regressions ({len(regressions)}): {regressions[:20]}")
    print("\n" + report)
    assert not regressions, report
    assert reaching > 0, report


def _suite_params():
    return [pytest.param(name, marks=[pytest.mark.slow] if speed == "slow" else [], id=name)
            for name, speed in MINIMIZE_SUITES.items()]


def test_scipy_minimize_subset_of_test_optimize_patched(tmp_path):
    """test_optimize.py's tests whose names mention minimize (~90 tests, seconds)."""
    compare_with_scipy_suite(tmp_path, "test_optimize.py", "minimize")


@pytest.mark.parametrize("test_file", _suite_params())
def test_scipy_suite_patched(tmp_path, test_file):
    """Every test passing unpatched passes with minimize replaced by numpy_api.minimize."""
    compare_with_scipy_suite(tmp_path, test_file)


#: A real client of ``scipy.optimize.minimize``: scikit-learn's test files that reach it
#: (Huber and logistic regression, NCA, Gaussian processes with ``(n, 2)`` array bounds,
#: calibration, GLMs, the MLP's L-BFGS solver). A few minutes for both runs of all eight.
SKLEARN_SUITES = [
    "linear_model/tests/test_huber.py", "neighbors/tests/test_nca.py",
    "gaussian_process/tests/test_gpr.py", "gaussian_process/tests/test_gpc.py",
    "tests/test_calibration.py", "linear_model/_glm/tests/test_glm.py",
    "neural_network/tests/test_mlp.py", "linear_model/tests/test_logistic.py",
]


@pytest.mark.slow
@pytest.mark.parametrize("test_file", SKLEARN_SUITES, ids=[f.rsplit("/", 1)[-1] for f in SKLEARN_SUITES])
def test_sklearn_tests_patched(tmp_path, test_file):
    """scikit-learn's own tests pass with scipy.optimize.minimize replaced by numpy_api.minimize."""
    sklearn = pytest.importorskip("sklearn")
    compare_with_scipy_suite(tmp_path, test_file, root=Path(sklearn.__file__).parent,
                             owner=f"scikit-learn {sklearn.__version__}")
