"""Callbacks in both SciPy styles, StopIteration, and the per-iteration history.

Derivatives are the user's (SciPy's rosen_der / rosen_hess on the flat
vector) so that every method runs the same way on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import rosen, rosen_der, rosen_hess
from scipy.optimize._minimize import MINIMIZE_METHODS, MINIMIZE_METHODS_NEW_CB

GRADIENT_FREE = {"nelder-mead", "powell", "cobyla", "cobyqa"}
NEEDS_HESS = {"newton-cg", "dogleg", "trust-ncg", "trust-krylov", "trust-exact", "trust-constr"}
# Methods that report nit and call the callback once per counted iteration.
NO_NIT = {"cobyla"}  # SciPy reports no nit
# SciPy's COBYQA calls the callback more often than nit counts; its Nelder-Mead
# counts one more iteration than it calls back.
CALLBACKS_NOT_NIT = {"cobyqa", "nelder-mead"}
LEGACY_METHODS = [m for m in MINIMIZE_METHODS if m != "trust-constr"]  # trust-constr: (xk, state)


def flat(h, x):
    return np.concatenate([np.ravel(h.to_numpy(x["a"])), np.ravel(h.to_numpy(x["b"]))]).astype(np.float64)


def problem(h, method):
    """Rosenbrock over x['a'] (1) then x['b'] (2), from a point where its Hessian is positive definite."""

    def fun(x):
        a, b = x["a"], x["b"]
        return (100.0 * (b[0] - a[0] ** 2) ** 2 + (1.0 - a[0]) ** 2
                + 100.0 * (b[1] - b[0] ** 2) ** 2 + (1.0 - b[0]) ** 2)

    def jac(x):
        g = rosen_der(flat(h, x))
        return {"a": h.asarray(g[:1]), "b": h.asarray(g[1:])}

    def hess(x):
        return rosen_hess(flat(h, x))

    x0 = {"a": h.asarray([0.9]), "b": h.asarray([0.8, 0.6])}
    kwargs = {}
    if method in GRADIENT_FREE:  # they need hundreds of evaluations; a few iterations show the style
        kwargs["options"] = {"maxiter": 10}
    if method not in GRADIENT_FREE:
        kwargs["jac"] = jac
    if method in NEEDS_HESS:
        kwargs["hess"] = hess
    return fun, x0, kwargs


def approx(h, x0, value):
    """``value`` up to the leaves' precision (JAX without x64 runs these tests in float32)."""
    if h.dtype_name(x0["a"]) == "float64":
        return pytest.approx(value, rel=1e-6, abs=1e-12)
    return pytest.approx(value, rel=1e-4, abs=1e-5)


def assert_pytree_like_x0(h, x):
    assert isinstance(x, dict) and list(x) == ["a", "b"]
    assert h.is_native(x["a"]) and h.is_native(x["b"])
    assert tuple(x["a"].shape) == (1,) and tuple(x["b"].shape) == (2,)


# ---- styles ------------------------------------------------------------------------


@pytest.mark.parametrize("method", MINIMIZE_METHODS_NEW_CB)
def test_new_style_callback(backend, method):
    h = backend
    fun, x0, kwargs = problem(h, method)
    seen = []

    def callback(intermediate_result):
        assert_pytree_like_x0(h, intermediate_result.x)
        assert "fun" in intermediate_result
        seen.append((flat(h, intermediate_result.x), float(intermediate_result.fun)))

    res = h.minimize(fun, x0, method=method, callback=callback, **kwargs)
    assert seen
    for x, f in seen:
        assert f == approx(h, x0, rosen(x))  # .fun is the objective at .x
    assert len(res.history["fun"]) == len(seen)
    if method not in NO_NIT | CALLBACKS_NOT_NIT:
        assert len(seen) == res.nit


@pytest.mark.parametrize("method", LEGACY_METHODS)
def test_legacy_callback_gets_pytree(backend, method):
    h = backend
    fun, x0, kwargs = problem(h, method)
    seen = []

    def callback(xk):
        assert_pytree_like_x0(h, xk)
        seen.append(flat(h, xk))

    res = h.minimize(fun, x0, method=method, callback=callback, **kwargs)
    assert seen
    assert len(res.history["fun"]) == len(seen)
    if method not in NO_NIT | CALLBACKS_NOT_NIT:
        assert len(seen) == res.nit


def test_trust_constr_legacy_callback_with_state(be):
    """callback(xk, state): xk is the iterate as a pytree, state is SciPy's state at that iterate."""
    h = be
    fun, x0, kwargs = problem(h, "trust-constr")
    kept, seen = [], []

    def callback(xk, state):
        assert_pytree_like_x0(h, xk)
        assert_pytree_like_x0(h, state.x)
        kept.append(xk)  # checked after the run: a reused buffer would change under us
        seen.append((flat(h, xk), flat(h, state.x), float(state.fun), np.asarray(state.grad, dtype=float),
                     state.nit))

    res = h.minimize(fun, x0, method="trust-constr", callback=callback, **kwargs)
    assert [s[4] for s in seen] == list(range(1, res.nit + 1))
    assert res.nit >= 3
    for k, (x, x_state, f, g, _) in zip(kept, seen):
        np.testing.assert_array_equal(x, x_state)  # the same point in both arguments
        np.testing.assert_array_equal(flat(h, k), x)  # and a copy the run does not write into
        assert f == pytest.approx(rosen(x), rel=1e-10, abs=1e-14)  # state describes xk
        np.testing.assert_allclose(g, rosen_der(x), rtol=1e-8, atol=1e-12)
    xs = np.array([s[0] for s in seen])
    assert len({tuple(x) for x in xs}) >= 3  # the iterates move ...
    assert np.linalg.norm(xs[-1] - flat(h, x0)) > 0.1
    np.testing.assert_allclose(xs[-1], flat(h, res.x), rtol=0, atol=1e-12)  # ... to the result


def test_tnc_legacy_callback(backend):
    """TNC takes only the old style: callback(xk)."""
    h = backend
    fun, x0, kwargs = problem(h, "tnc")
    seen = []
    res = h.minimize(fun, x0, method="TNC", callback=lambda xk: seen.append(flat(h, xk)), **kwargs)
    assert res.success, res.message
    assert len(seen) == res.nit >= 1
    np.testing.assert_allclose(flat(h, res.x), 1.0, atol=1e-3)


@pytest.mark.parametrize("style", ["new", "legacy"])
def test_cobyla_callback(backend, style):
    h = backend
    fun, x0, kwargs = problem(h, "cobyla")
    seen = []
    if style == "new":
        def callback(intermediate_result):
            seen.append(flat(h, intermediate_result.x))
    else:
        def callback(xk):
            seen.append(flat(h, xk))
    res = h.minimize(fun, x0, method="COBYLA", callback=callback, **kwargs)
    assert len(seen) >= 1
    assert len(res.history["fun"]) == len(seen)
    assert res.fun == approx(h, x0, rosen(flat(h, res.x)))


# ---- StopIteration -------------------------------------------------------------------

def check_stopped(h, res, seen):
    assert res.success is False
    assert "callback" in res.message.lower()
    assert len(seen) == 1
    if "nit" in res:
        assert res.nit <= 2
    assert_pytree_like_x0(h, res.x)
    np.testing.assert_array_equal(flat(h, res.x), seen[0])  # x: where the callback stopped it


@pytest.mark.parametrize("method", [m for m in MINIMIZE_METHODS if m in MINIMIZE_METHODS_NEW_CB])
def test_stop_iteration_new_style(backend, method):
    h = backend
    fun, x0, kwargs = problem(h, method)
    seen = []

    def callback(intermediate_result):
        seen.append(flat(h, intermediate_result.x))
        raise StopIteration

    check_stopped(h, h.minimize(fun, x0, method=method, callback=callback, **kwargs), seen)


@pytest.mark.parametrize("method", LEGACY_METHODS)
def test_stop_iteration_legacy_style(backend, method):
    """Every method, TNC included (SciPy's TNC itself cannot stop on it)."""
    h = backend
    fun, x0, kwargs = problem(h, method)
    seen = []

    def callback(xk):
        seen.append(flat(h, xk))
        raise StopIteration

    check_stopped(h, h.minimize(fun, x0, method=method, callback=callback, **kwargs), seen)


def test_stop_iteration_trust_constr_legacy(backend):
    h = backend
    fun, x0, kwargs = problem(h, "trust-constr")
    seen = []

    def callback(xk, state):
        seen.append(flat(h, xk))
        raise StopIteration

    check_stopped(h, h.minimize(fun, x0, method="trust-constr", callback=callback, **kwargs), seen)


def test_stop_iteration_after_a_few_iterations(backend):
    h = backend
    fun, x0, kwargs = problem(h, "tnc")
    seen = []

    def callback(xk):
        seen.append(flat(h, xk))
        if len(seen) == 3:
            raise StopIteration

    res = h.minimize(fun, x0, method="TNC", callback=callback, **kwargs)
    assert res.success is False and "callback" in res.message.lower()
    assert res.nit == 3
    np.testing.assert_array_equal(flat(h, res.x), seen[-1])
    assert len(res.history["fun"]) == 3


# ---- history ---------------------------------------------------------------------------

HISTORY_METHODS = [m for m in MINIMIZE_METHODS if m not in NO_NIT | CALLBACKS_NOT_NIT]


@pytest.mark.parametrize("method", HISTORY_METHODS)
def test_history_one_entry_per_iteration(backend, method):
    h = backend
    fun, x0, kwargs = problem(h, method)
    res = h.minimize(fun, x0, method=method, **kwargs)  # no callback: history is kept anyway
    assert res.nit >= 1
    for key, values in res.history.items():
        assert len(values) == res.nit, key
    np.testing.assert_array_equal(res.history["nit"], np.arange(1, res.nit + 1))
    assert np.all(np.diff(res.history["time"]) >= 0)
    assert np.all(np.diff(res.history["nfev"]) >= 0)


@pytest.mark.parametrize("method", ["l-bfgs-b", "bfgs", "trust-exact"])
def test_history_tracks_the_iterates(backend, method):
    """The recorded objective is the iterate's: it ends at res.fun and never increases here."""
    h = backend
    fun, x0, kwargs = problem(h, method)
    res = h.minimize(fun, x0, method=method, **kwargs)
    values = res.history["fun"]
    assert values[-1] == pytest.approx(res.fun, rel=1e-9, abs=1e-15)
    assert np.all(np.diff(values) <= 1e-12)


def assert_grad_norms_at_iterates(h, res, iterates):
    """history['grad_norm'] is the 2-norm of the true gradient at each recorded iterate."""
    norms = np.asarray(res.history["grad_norm"])
    assert len(norms) == len(iterates) == res.nit >= 2
    true = np.array([np.linalg.norm(rosen_der(x)) for x in iterates])
    # An L1 or inf norm, or another point's gradient, misses by far more than rounding.
    np.testing.assert_allclose(norms, true, rtol=1e-7, atol=1e-10)
    assert norms[-1] < 1e-3 * norms[0]


@pytest.mark.parametrize("method", ["l-bfgs-b", "bfgs", "trust-exact"])  # trust-exact rejects steps
def test_history_gradient_norm_with_autodiff(ad, method):
    h = ad
    fun, x0, _ = problem(h, method)
    iterates = []
    res = h.minimize(fun, x0, method=method, callback=lambda xk: iterates.append(flat(h, xk)))
    assert_grad_norms_at_iterates(h, res, iterates)


@pytest.mark.parametrize("method", ["l-bfgs-b", "bfgs"])
def test_history_gradient_norm_with_jac_callable(be, method):
    h = be
    fun, x0, kwargs = problem(h, method)
    iterates = []
    res = h.minimize(fun, x0, method=method, callback=lambda xk: iterates.append(flat(h, xk)), **kwargs)
    assert_grad_norms_at_iterates(h, res, iterates)


@pytest.mark.parametrize("method", ["l-bfgs-b", "bfgs", "trust-exact", "trust-constr", "tnc", "newton-cg"])
def test_history_without_callback_matches_the_general_path(backend, method):
    """With nothing to call back, the hook only records, by a leaner path: the same rows.

    trust-exact rejects steps (the gradient is then the one before the last
    evaluation); trust-constr reports its gradient in the state; TNC calls
    back in the legacy style. A run with a no-op callback takes the general
    path; every recorded column but the clock must agree.
    """
    h = backend
    fun, x0, kwargs = problem(h, method)
    lean = h.minimize(fun, x0, method=method, **kwargs)
    noop = (lambda xk, state=None: None) if method == "trust-constr" else (lambda xk: None)
    general = h.minimize(fun, x0, method=method, callback=noop, **kwargs)
    assert lean.nit == general.nit >= 2
    for key in ("nit", "fun", "nfev", "epoch"):
        np.testing.assert_array_equal(lean.history[key], general.history[key], err_msg=key)
    # L-BFGS-B's lean record norms small gradients all at once: the same norms up to summation order.
    np.testing.assert_allclose(lean.history["grad_norm"], general.history["grad_norm"], rtol=1e-14)
    assert np.all(np.isfinite(lean.history["grad_norm"]))


@pytest.mark.parametrize("gradient", ["jac callable", "jac=True", "autodiff", "2-point"])
def test_lbfgsb_lean_history_for_every_gradient_source(be, gradient):
    """L-BFGS-B's lean record keeps the last gradient (its bytes, at small n), normed in ``history``: the same rows.

    Each way of getting a gradient reaches the objective by its own path
    (``note_grad``, the memo, the backend's autodiff; none with finite
    differences, where the norm is NaN on both paths).
    """
    h = be
    fun, x0, kwargs = problem(h, "l-bfgs-b")
    if gradient == "jac=True":
        jac = kwargs.pop("jac")
        kwargs["jac"] = True
        fun_in = fun

        def fun(x):  # noqa: F811 (the value-and-gradient form of the same problem)
            return fun_in(x), jac(x)
    elif gradient == "autodiff":
        if h.name == "numpy":
            pytest.skip("numpy has no autodiff")
        kwargs.pop("jac")
    elif gradient == "2-point":
        kwargs["jac"] = "2-point"
    lean = h.minimize(fun, x0, method="L-BFGS-B", **kwargs)
    general = h.minimize(fun, x0, method="L-BFGS-B", callback=lambda xk: None, **kwargs)
    assert lean.nit == general.nit >= 2
    for key in ("nit", "fun", "nfev"):
        np.testing.assert_array_equal(lean.history[key], general.history[key], err_msg=key)
    np.testing.assert_allclose(lean.history["grad_norm"], general.history["grad_norm"], rtol=1e-14)
    if gradient == "2-point":
        assert np.all(np.isnan(lean.history["grad_norm"]))
    else:
        assert lean.history["grad_norm"][-1] == pytest.approx(np.linalg.norm(flat(h, lean.jac)), rel=1e-12)


# ---- history=False -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["l-bfgs-b", "bfgs", "trust-constr", "tnc", "nelder-mead"])
def test_history_off_runs_the_same_without_history(backend, method):
    h = backend
    fun, x0, kwargs = problem(h, method)
    on = h.minimize(fun, x0, method=method, **kwargs)
    off = h.minimize(fun, x0, method=method, history=False, **kwargs)
    assert "history" in on and "history" not in off
    assert off.nit == on.nit and off.nfev == on.nfev and off.fun == on.fun
    np.testing.assert_array_equal(flat(h, off.x), flat(h, on.x))


def test_history_off_hands_scipy_no_callback(monkeypatch):
    """With nothing to do per iteration, SciPy runs its own loop: no callback at all."""
    from conftest import capture_scipy_call

    from dict_minimize import numpy_api

    seen = capture_scipy_call(monkeypatch, run=True)
    x0 = {"a": np.array([1.3]), "b": np.array([0.7])}
    res = numpy_api.minimize(lambda d: rosen(np.concatenate([d["a"], d["b"]])), x0, method="L-BFGS-B",
                             history=False)
    assert seen["callback"] is None and "history" not in res and res.nit >= 2  # SciPy's own count
    numpy_api.minimize(lambda d: rosen(np.concatenate([d["a"], d["b"]])), x0, method="L-BFGS-B")
    assert callable(seen["callback"])  # the history row


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scipys_own_case_records_no_history_unless_asked(monkeypatch, dtype):
    """A flat ndarray x0 in numpy_api runs as SciPy does by default: no callback, no history."""
    from conftest import capture_scipy_call

    from dict_minimize import numpy_api

    seen = capture_scipy_call(monkeypatch, run=True)
    x0 = np.array([1.3, 0.7], dtype=dtype)
    res = numpy_api.minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B")
    assert seen["callback"] is None and "history" not in res
    theirs = scipy.optimize.minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B")
    assert res.nit == theirs.nit >= 2 and res.nfev == theirs.nfev
    asked = numpy_api.minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B", history=True)
    assert callable(seen["callback"]) and len(asked.history["fun"]) == asked.nit == res.nit
    assert asked.history["fun"][-1] == asked.fun


def test_flat_tensors_of_the_frameworks_record_history(be):
    """Only numpy_api's flat ndarray is SciPy's own case: a flat tensor of a framework records one."""
    h = be
    x0 = h.asarray(np.array([1.3, 0.7]))
    res = h.minimize(lambda x: h.ops.sum((1.0 - x) ** 2), x0, method="L-BFGS-B")
    assert ("history" in res) is (h.name != "numpy")
    if h.name != "numpy":
        assert len(res.history["fun"]) == res.nit >= 1


def test_history_off_still_calls_the_user_and_stops(be):
    h = be
    fun, x0, kwargs = problem(h, "l-bfgs-b")
    calls = []

    def callback(intermediate_result):
        calls.append(intermediate_result.fun)
        if len(calls) == 3:
            raise StopIteration

    res = h.minimize(fun, x0, method="L-BFGS-B", callback=callback, history=False, **kwargs)
    assert len(calls) == 3 and res.nit == 3 and "history" not in res
    assert res.success is False and res.fun == pytest.approx(calls[-1])


@pytest.mark.parametrize("bad", ["no", 0, 1.0])
def test_history_must_be_a_bool(bad):
    from dict_minimize import numpy_api

    with pytest.raises(TypeError, match="history must be True, False or None"):
        numpy_api.minimize(rosen, np.array([1.3, 0.7]), jac=rosen_der, history=bad)


@pytest.mark.parametrize("n", [2, 128, 129, 1000])  # bytes kept and normed later up to 128, a norm at once above
def test_lbfgsb_history_norms_on_both_sides_of_the_deferral(n):
    """The lean record's norm is the true gradient's at each iterate, however it is taken."""
    from scipy.optimize import rosen

    from dict_minimize import numpy_api

    x0 = np.linspace(-1.0, 1.5, n)
    iterates = []
    res = numpy_api.minimize(lambda x: (rosen(x), rosen_der(x)), x0, jac=True, method="L-BFGS-B",
                             options={"maxiter": 15}, history=True)
    numpy_api.minimize(lambda x: (rosen(x), rosen_der(x)), x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": 15}, callback=lambda xk: iterates.append(np.array(xk)))
    true = [np.linalg.norm(rosen_der(x)) for x in iterates]
    assert len(true) == res.nit == 15
    np.testing.assert_allclose(res.history["grad_norm"], true, rtol=1e-12)


def test_history_norms_of_mixed_records():
    """A column of floats and kept gradients (as ``history`` may see) norms each row."""
    from dict_minimize.core.callbacks import _norms

    a, b = np.array([3.0, 4.0]), np.array([1.0, 2.0, 2.0])
    np.testing.assert_array_equal(_norms((a.tobytes(), 7.0, np.nan, a.tobytes())), [5.0, 7.0, np.nan, 5.0])
    np.testing.assert_array_equal(_norms((a.tobytes(), b.tobytes())), [5.0, 3.0])
    assert _norms(()).shape == (0,)
