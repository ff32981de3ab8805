"""Drop-in gaps found by running SciPy's own tests through numpy_api, checked in every backend.

Each test is one cause seen there: SciPy accepts the input, and so must every
backend when x0 is one tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint


def quadratic(h, center):
    def fun(x):
        return h.ops.sum((x - h.asarray(center, h.dtype_name(x))) ** 2)

    return fun


def as_flat(h, x):
    return np.ravel(h.to_numpy(x)).astype(np.float64)


def test_trust_constr_one_argument_callback(backend):
    """dict_minimize 0.0.x's callback(xk) style; SciPy itself would pass (xk, state)."""
    h = backend
    seen = []
    res = h.minimize(quadratic(h, [1.0, 2.0]), h.asarray([0.0, 0.0]), method="trust-constr",
                     callback=lambda xk: seen.append(as_flat(h, xk)))
    assert len(seen) == res.nit >= 2
    assert h.is_native(res.x)
    np.testing.assert_allclose(seen[-1], as_flat(h, res.x))


def test_trust_constr_callback_returning_true_stops(backend):
    h = backend
    calls = []

    def callback(xk, state):
        calls.append(state.nit)
        return len(calls) == 3

    res = h.minimize(quadratic(h, [1.0, 2.0, 3.0]), h.asarray([5.0, 5.0, 5.0]), method="trust-constr",
                     callback=callback, options={"gtol": 1e-14, "xtol": 1e-14, "maxiter": 200})
    assert calls == [1, 2, 3]
    assert res.success is False and "callback" in res.message.lower()


@pytest.mark.parametrize("form", ["nested-list", "one-row-sequence", "flat-list"])
@pytest.mark.parametrize("method", ["SLSQP", "trust-constr"])
def test_constraint_jac_as_python_sequences(backend, method, form):
    """A constraint jac that returns array-likes for a one-tensor x0 is read as SciPy reads it."""
    h = backend
    n = 3

    def jac(x):
        row = [1.0] * n
        return {"nested-list": [row], "one-row-sequence": [np.ones(n)], "flat-list": row}[form]

    con = {"type": "eq", "fun": lambda x: h.ops.sum(x) - 1.0, "jac": jac}
    res = h.minimize(quadratic(h, [0.0] * n), h.asarray([0.5, 0.2, 0.1]), method=method,
                     jac=lambda x: 2.0 * x, constraints=[con], tol=1e-10)
    assert res.success, res.message
    atol = 1e-4 if h.dtype_name(res.x) == "float64" else 1e-3  # JAX without x64: float32
    np.testing.assert_allclose(as_flat(h, res.x), 1.0 / n, atol=atol)


def test_nonlinear_constraint_sparse_jac_numpy():
    from scipy.sparse import csr_matrix

    from dict_minimize import numpy_api

    con = NonlinearConstraint(lambda x: np.sum(x), 1.0, 1.0, jac=lambda x: csr_matrix(np.ones((1, 3))))
    res = numpy_api.minimize(lambda x: np.sum(x**2), np.array([0.5, 0.2, 0.1]), method="trust-constr",
                             constraints=con)
    np.testing.assert_allclose(res.x, 1.0 / 3, atol=1e-5)


def test_bounds_as_n_by_2_array(backend):
    h = backend
    bounds = np.array([[0.0, 0.5], [-1.0, 1.0], [np.nan, -2.0]])  # NaN: unbounded, as in SciPy
    res = h.minimize(quadratic(h, [1.0, 0.0, 0.0]), h.asarray([0.1, 0.2, -3.0]), method="L-BFGS-B",
                     bounds=bounds)
    np.testing.assert_allclose(as_flat(h, res.x), [0.5, 0.0, -2.0], atol=1e-5)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_cobyqa_one_element_objective(backend, shape):
    h = backend

    def fun(x):
        return h.ops.reshape(h.ops.sum((x - 1.0) ** 2), shape)

    res = h.minimize(fun, h.asarray([0.0, 0.0]), method="COBYQA")
    np.testing.assert_allclose(as_flat(h, res.x), 1.0, atol=1e-3)
    assert isinstance(res.fun, float)


@pytest.mark.parametrize("method", ["COBYQA", "BFGS"])
def test_many_element_objective_is_value_and_type_error(backend, method):
    """SciPy raises ValueError for it, COBYQA TypeError: numpy_api's drop-in users catch either."""
    h = backend
    with pytest.raises(ValueError, match="scalar") as err:
        h.minimize(lambda x: x * 2.0, h.asarray([0.0, 1.0]), method=method, jac="2-point")
    if h.name == "numpy":
        assert isinstance(err.value, TypeError)


def test_fun_writing_into_its_flat_x_changes_nothing():
    """For a flat ndarray x0, fun gets SciPy's own copy of the point (as from SciPy).

    A fun that scribbles over it must not corrupt the memo, the best point or
    the result: the run is SciPy's, point for point.
    """
    from scipy.optimize import minimize as scipy_minimize
    from scipy.optimize import rosen, rosen_der

    from dict_minimize import numpy_api

    seen = []

    def scribbling(x):
        value, grad = rosen(x), rosen_der(x)
        seen.append(x.copy())
        x[:] = 123.0  # the user's own business, after use
        return value, grad

    x0 = np.array([-1.2, 1.0, 0.5])
    x0_before = x0.copy()
    ours = numpy_api.minimize(scribbling, x0, jac=True, method="L-BFGS-B", history=True)
    ours_points = seen[:]
    seen.clear()
    theirs = scipy_minimize(scribbling, x0, jac=True, method="L-BFGS-B")
    np.testing.assert_array_equal(x0, x0_before)
    assert ours.nfev == theirs.nfev and ours.nit == theirs.nit
    np.testing.assert_array_equal(ours.x, theirs.x)
    np.testing.assert_array_equal(np.array(ours_points), np.array(seen))
    assert ours.fun == pytest.approx(0.0, abs=1e-8)
    assert ours.history["fun"][-1] == ours.fun


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS", "CG", "TNC", "SLSQP"])
def test_gradient_in_a_reused_buffer_runs_as_in_scipy(method):
    """For a flat ndarray x0 the gradient fun returns is taken as SciPy takes it, not copied.

    A fun that writes every gradient into one buffer of its own changes what
    SciPy's methods see (BFGS's gradient difference is then zero); the
    drop-in runs the same iterations to the same point, bit for bit.
    """
    from scipy.optimize import minimize as scipy_minimize
    from scipy.optimize import rosen, rosen_der

    from dict_minimize import numpy_api

    buffer = np.empty(4)

    def value_and_grad(x):
        buffer[:] = rosen_der(x)
        return rosen(x), buffer

    x0 = np.array([-1.2, 1.0, 0.5, 0.8])
    options = {"maxfun": 100} if method == "TNC" else {"maxiter": 50}
    ours = numpy_api.minimize(value_and_grad, x0, jac=True, method=method, options=options)
    theirs = scipy_minimize(value_and_grad, x0, jac=True, method=method, options=options)
    assert (ours.nit, ours.nfev) == (theirs.nit, theirs.nfev)
    np.testing.assert_array_equal(ours.x, theirs.x)
    assert ours.fun == theirs.fun
    assert ours.jac is not buffer  # the result's gradient is the user's to keep, not the buffer
