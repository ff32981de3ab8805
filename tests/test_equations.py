"""The contract of ``least_squares`` and ``root``, over every backend.

x0 any pytree, residuals a tensor of any shape or a pytree of them,
``res.x`` a pytree like x0, ``res.fun`` shaped like ``fun``'s return,
``res.jac`` the dense ``(m, n)`` Jacobian over the flat order; autodiff
Jacobians by default in the autodiff backends, SciPy's strings for finite
differences; bounds in every form ``minimize`` takes.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.optimize import Bounds

T = np.linspace(0.0, 1.0, 12)
A_TRUE, K_TRUE = 2.0, np.array([1.5, -0.5])


def api(h):
    return importlib.import_module(f"dict_minimize.{h.name}_api")


def model(h, t, y):
    """Residuals as a dict: a (12,) fit and a (2, 1) ridge term (the minimum is near the truth)."""
    ops = h.ops

    def fun(p):
        pred = p["a"] * ops.exp(-p["k"][0] * t) + p["k"][1] * t
        return {"fit": pred - y, "ridge": ops.reshape(1e-6 * p["k"], (2, 1))}

    return fun


def data(h):
    y = A_TRUE * np.exp(-K_TRUE[0] * T) + K_TRUE[1] * T
    return h.asarray(T), h.asarray(y)


def x0_of(h, dtype="float64"):
    return {"a": h.asarray(1.0, dtype), "k": h.asarray([1.0, 0.0], dtype)}


def jacobian_by_hand(p, t):
    """d residuals / d (a, k0, k1), rows in fun's flat order (fit then ridge)."""
    a, k0 = p
    e = np.exp(-k0 * t)
    fit = np.stack([e, -a * t * e, t], axis=1)
    ridge = np.array([[0.0, 1e-6, 0.0], [0.0, 0.0, 1e-6]])
    return np.vstack([fit, ridge])


def test_least_squares_pytrees_in_and_out(be):
    t, y = data(be)
    x0 = x0_of(be)
    res = api(be).least_squares(model(be, t, y), x0)
    assert res.success
    assert set(res.x) == {"a", "k"} and be.is_native(res.x["a"]) and be.is_native(res.x["k"])
    assert tuple(res.x["k"].shape) == (2,) and be.dtype_name(res.x["k"]) == "float64"
    np.testing.assert_allclose(be.to_numpy(res.x["a"]), A_TRUE, rtol=1e-6)
    np.testing.assert_allclose(be.to_numpy(res.x["k"]), K_TRUE, rtol=1e-5, atol=1e-6)
    assert set(res.fun) == {"fit", "ridge"}
    assert res.fun["fit"].shape == (12,) and res.fun["ridge"].shape == (2, 1)
    assert res.jac.shape == (14, 3)
    assert set(res.grad) == {"a", "k"}
    cost = 0.5 * np.sum(res.fun["fit"] ** 2) + 0.5 * np.sum(res.fun["ridge"] ** 2)
    np.testing.assert_allclose(res.cost, cost)
    # x0 untouched
    np.testing.assert_array_equal(be.to_numpy(x0["k"]), [1.0, 0.0])


@pytest.mark.parametrize("jac", [None, "2-point", "3-point"])
def test_least_squares_jacobian_at_x0(be, jac):
    """max_nfev=1 returns SciPy's Jacobian at x0: autodiff's exact, finite differences' close."""
    t, y = data(be)
    kwargs = {} if jac is None else {"jac": jac}
    res = api(be).least_squares(model(be, t, y), x0_of(be), max_nfev=1, **kwargs)
    expected = jacobian_by_hand((1.0, 1.0), T)
    exact = jac is None and be.autodiff
    tol = {"rtol": 1e-12, "atol": 1e-12} if exact else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(res.jac, expected, **tol)
    assert res.nfev == 1 and res.njev == 1


def test_autodiff_and_finite_differences_agree(ad):
    t, y = data(ad)
    ours = api(ad).least_squares(model(ad, t, y), x0_of(ad))
    fd = api(ad).least_squares(model(ad, t, y), x0_of(ad), jac="2-point")
    np.testing.assert_allclose(ad.to_numpy(ours.x["k"]), ad.to_numpy(fd.x["k"]), rtol=1e-5, atol=1e-6)
    assert ours.cost <= fd.cost * (1 + 1e-9) + 1e-20


def test_reverse_mode_when_fewer_residuals(be):
    """m < n (2 residuals, 6 variables): the Jacobian is still exact."""
    ops = be.ops

    def fun(x):
        return ops.stack([ops.sum(x["u"] ** 2) - 1.0, ops.sum(ops.sin(x["v"]))])

    x0 = {"u": be.asarray([0.5, 0.5, 0.5]), "v": be.asarray([0.1, 0.2, 0.3])}
    res = api(be).least_squares(fun, x0, max_nfev=1)
    expected = np.array([[1.0, 1.0, 1.0, 0, 0, 0], [0, 0, 0, *np.cos([0.1, 0.2, 0.3])]])
    np.testing.assert_allclose(res.jac, expected, rtol=1e-6 if not be.autodiff else 1e-12, atol=1e-7)
    assert res.fun.shape == (2,)


@pytest.mark.parametrize("form", ["mapping", "pair-of-trees", "Bounds-of-trees", "lb_dict"])
def test_least_squares_bounds_forms(be, form):
    t, y = data(be)
    bounds = {
        "mapping": {"a": (None, 1.5)},
        "pair-of-trees": ({"a": -np.inf, "k": -np.inf}, {"a": 1.5, "k": np.inf}),
        "Bounds-of-trees": Bounds({"a": -np.inf, "k": [-np.inf, -np.inf]}, {"a": 1.5, "k": np.inf}),
        "lb_dict": None,
    }[form]
    kwargs = {"ub_dict": {"a": 1.5}} if form == "lb_dict" else {"bounds": bounds}
    res = api(be).least_squares(model(be, t, y), x0_of(be), **kwargs)
    np.testing.assert_allclose(be.to_numpy(res.x["a"]), 1.5, rtol=1e-6)
    np.testing.assert_array_equal(res.active_mask, [1, 0, 0])


def test_least_squares_callback_and_args(be):
    t, y = data(be)
    seen = []

    def fun(p, scale, *, shift):
        r = model(be, t, y)(p)
        return {"fit": scale * r["fit"] + shift, "ridge": r["ridge"]}

    def callback(intermediate_result):
        seen.append(intermediate_result)
        if len(seen) == 2:
            raise StopIteration

    res = api(be).least_squares(fun, x0_of(be), args=(2.0,), kwargs={"shift": 0.0}, callback=callback)
    assert res.status == -2 and not res.success
    assert be.is_native(seen[-1].x["a"]) and seen[-1].fun["ridge"].shape == (2, 1)


def test_least_squares_float32_keeps_dtype(backend):
    h = backend
    t, y = h.asarray(T, "float32"), h.asarray(A_TRUE * np.exp(-K_TRUE[0] * T) + K_TRUE[1] * T, "float32")
    res = api(h).least_squares(model(h, t, y), x0_of(h, "float32"))
    assert h.dtype_name(res.x["k"]) == "float32"
    np.testing.assert_allclose(h.to_numpy(res.x["a"]), A_TRUE, rtol=1e-3)


def test_least_squares_errors(be):
    t, y = data(be)
    ls = api(be).least_squares
    calls = []

    def changing(p):
        calls.append(1)
        r = model(be, t, y)(p)
        return r if len(calls) == 1 else {"fit": r["fit"][:5], "ridge": r["ridge"]}

    with pytest.raises(ValueError, match=r"fun\(x\)\['fit'\] has shape \(5,\)"):
        ls(changing, x0_of(be), jac="2-point")

    def not_finite(p):
        r = model(be, t, y)(p)
        return {"fit": r["fit"], "ridge": r["ridge"] + np.inf}

    with pytest.raises(ValueError, match=r"not finite in the initial point: fun\(x\)\['ridge'\]"):
        ls(not_finite, {"a": be.asarray(1.0), "k": be.asarray([0.0, 0.0])}, jac="2-point")
    if be.int_tensor is not None:
        with pytest.raises(TypeError, match=r"x0\['bad'\]"):
            ls(model(be, t, y), {**x0_of(be), "bad": be.int_tensor()})
    with pytest.raises(TypeError, match="no_such_option"):
        ls(model(be, t, y), x0_of(be), no_such_option=1)
    with pytest.raises(ValueError, match=r"x0\['a'\]"):
        ls(model(be, t, y), {"a": be.asarray(np.nan), "k": be.asarray([1.0, 0.0])})


def test_least_squares_user_jac_as_blocks(be):
    """A user jac returning a pytree like x0 of (m, *leaf.shape) blocks."""
    t, y = data(be)

    def jac(p):
        full = jacobian_by_hand((float(be.to_numpy(p["a"])), float(be.to_numpy(p["k"])[0])), T)
        return {"a": full[:, 0], "k": full[:, 1:]}

    res = api(be).least_squares(model(be, t, y), x0_of(be), jac=jac)
    np.testing.assert_allclose(be.to_numpy(res.x["a"]), A_TRUE, rtol=1e-6)


def equations(h):
    ops = h.ops

    def fun(x):
        pair = ops.stack([x["b"][0] - x["a"], x["b"][1] * x["b"][0] - 6.0])
        return {"cube": x["a"] ** 3 - 8.0, "pair": pair}

    return fun


@pytest.mark.parametrize("method", ["hybr", "lm", "krylov"])
def test_root_pytrees(be, method):
    x0 = {"a": be.asarray(1.5), "b": be.asarray([1.0, 1.0])}
    if method == "krylov":
        # Newton-Krylov's finite-difference products make its path from the far
        # start chaotic: a one-ulp difference between frameworks' ``a ** 3``
        # decides whether it converges (numpy in 31 iterations, torch not in 400).
        x0 = {"a": be.asarray(1.8), "b": be.asarray([1.8, 3.2])}
    res = api(be).root(equations(be), x0, method=method)
    assert res.success, res.message
    assert be.is_native(res.x["b"]) and tuple(res.x["b"].shape) == (2,)
    np.testing.assert_allclose(be.to_numpy(res.x["a"]), 2.0, rtol=1e-6)
    np.testing.assert_allclose(be.to_numpy(res.x["b"]), [2.0, 3.0], rtol=1e-6)
    assert set(res.fun) == {"cube", "pair"} and res.fun["pair"].shape == (2,)
    if method in ("hybr", "lm") and be.autodiff:
        assert res.njev >= 1  # the autodiff Jacobian was used


def test_root_jac_true_and_callback(be):
    x0 = {"a": be.asarray(1.5), "b": be.asarray([1.0, 1.0])}
    fun = equations(be)

    def with_jac(x):
        a, b = (float(v) for v in be.to_numpy(x["a"]).reshape(1)), be.to_numpy(x["b"])
        (a,) = a
        return fun(x), np.array([[3 * a**2, 0, 0], [-1, 1, 0], [0, b[1], b[0]]])

    res = api(be).root(with_jac, x0, jac=True)
    np.testing.assert_allclose(be.to_numpy(res.x["b"]), [2.0, 3.0], rtol=1e-6)
    seen = []
    api(be).root(fun, x0, method="broyden1", callback=lambda x, f: seen.append((x, f)))
    assert seen and be.is_native(seen[0][0]["a"]) and set(seen[0][1]) == {"cube", "pair"}


def test_root_errors(be):
    with pytest.raises(ValueError, match=r"x0\['a'\]"):
        api(be).root(equations(be), {"a": be.asarray(np.inf), "b": be.asarray([1.0, 1.0])})
    with pytest.raises(TypeError, match="fun must be callable"):
        api(be).root(None, {"a": be.asarray(1.0)})


@pytest.mark.parametrize("name", ["least_squares", "root"])
def test_docstring_examples_run(backend, name):
    import doctest

    fun = getattr(api(backend), name)
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(fun, name, globs={}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 5 and result.failed == 0


def test_compiled_jacobian_traced_once_per_call(ad):
    """JAX and TensorFlow trace the Jacobian once per call, not per evaluation; never across calls.

    A plain ``fun`` may read state that changed between calls (docs/guide.md's
    rule), so the second call traces again, exactly as often as the first.
    """
    if ad.name not in ("jax", "tensorflow"):
        pytest.skip(f"{ad.name} does not compile")
    t, y = data(ad)
    inner = model(ad, t, y)
    calls = []

    def fun(p):
        calls.append(1)
        return inner(p)

    first = api(ad).least_squares(fun, x0_of(ad))
    traced = len(calls) - first.nfev
    assert 1 <= traced <= 3  # the Jacobian's trace(s), not one per evaluation
    calls.clear()
    second = api(ad).least_squares(fun, x0_of(ad))
    assert len(calls) - second.nfev == traced
    np.testing.assert_array_equal(ad.to_numpy(second.x["k"]), ad.to_numpy(first.x["k"]))


def test_least_squares_benchmark_runs(tmp_path):
    """benchmarks/least_squares.py --quick: SciPy and numpy_api do the same work to the same cost."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "least_squares.py"
    out = tmp_path / "ls.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--repeats", "1", "--backends", "numpy",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["command"].startswith("python benchmarks/least_squares.py --quick")
    (run,) = [v for k, v in data.items() if k != "command"]
    ref, ours = run["sides"]["scipy 2-point"], run["sides"]["numpy_api 2-point"]
    assert (ours["nfev"], ours["njev"]) == (ref["nfev"], ref["njev"])
    assert ours["cost"] == ref["cost"]
    assert "| numpy_api 2-point |" in proc.stdout
