"""No work lost: interrupts, exceptions and non-finite values leave the best point, in every backend.

``jac=True`` and ``jac`` callables are called eagerly in every backend, so the
faults are planted there (a compiled objective runs its Python only once).
"""

from __future__ import annotations

import numpy as np
import pytest


class Boom(Exception):
    """The user's own exception type."""


def recording_problem(h, fault_after, fault):
    """Rosenbrock in 4 variables with an exact gradient; ``fault(calls)`` after ``fault_after`` calls.

    Returns ``fun`` (for ``jac=True``), x0 and the list of (value, flat x) it evaluated.
    """
    seen = []

    def fun(x):
        v = np.ravel(h.to_numpy(x["v"])).astype(np.float64)
        value = float(np.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2))
        grad = np.zeros_like(v)
        grad[:-1] += -400.0 * v[:-1] * (v[1:] - v[:-1] ** 2) - 2.0 * (1.0 - v[:-1])
        grad[1:] += 200.0 * (v[1:] - v[:-1] ** 2)
        if len(seen) >= fault_after:
            value = fault(value)
        seen.append((value, v))
        return h.asarray(value), {"v": h.asarray(grad)}

    return fun, {"v": h.asarray([-1.2, 1.0, -0.5, 0.8])}, seen


def best_seen(seen):
    finite = [(f, v) for f, v in seen if np.isfinite(f)]
    return min(finite, key=lambda fv: fv[0])


def interrupt(_):
    raise KeyboardInterrupt


def boom(_):
    raise Boom("planted")


def not_a_number(_):
    return float("nan")


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS", "CG", "TNC", "SLSQP"])
def test_keyboard_interrupt_returns_the_best_point(be, method):
    h = be
    fun, x0, seen = recording_problem(h, 30, interrupt)
    res = h.minimize(fun, x0, jac=True, method=method)
    assert res.success is False and "KeyboardInterrupt" in res.message
    f_best, x_best = best_seen(seen)
    assert res.fun == pytest.approx(f_best)
    assert h.is_native(res.x["v"])
    np.testing.assert_allclose(h.to_numpy(res.x["v"]), x_best, rtol=1e-12)
    assert res.fun < seen[0][0]  # work was done, and it is kept


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS", "Newton-CG"])
def test_exception_keeps_its_type_and_carries_the_best_point(be, method):
    h = be
    fun, x0, seen = recording_problem(h, 30, boom)
    with pytest.raises(Boom, match="planted") as err:
        h.minimize(fun, x0, jac=True, method=method)
    best = err.value.best_result
    f_best, x_best = best_seen(seen)
    assert best.success is False and "Boom" in best.message
    assert best.fun == pytest.approx(f_best)
    np.testing.assert_allclose(h.to_numpy(best.x["v"]), x_best, rtol=1e-12)


def test_exception_from_callback_carries_the_best_point(be):
    h = be
    fun, x0, seen = recording_problem(h, 10**9, not_a_number)

    iterations = []

    def callback(intermediate_result):
        iterations.append(intermediate_result.fun)
        if len(iterations) == 5:
            raise Boom("from the callback")

    with pytest.raises(Boom) as err:
        h.minimize(fun, x0, jac=True, method="L-BFGS-B", callback=callback)
    assert err.value.best_result.fun == pytest.approx(best_seen(seen)[0])
    assert err.value.best_result.nit == 5


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS", "Newton-CG"])
def test_run_ending_on_nan_returns_the_best_finite_point(be, method):
    h = be
    fun, x0, seen = recording_problem(h, 20, not_a_number)
    res = h.minimize(fun, x0, jac=True, method=method)
    assert np.isfinite(res.fun)
    f_best, x_best = best_seen(seen)
    assert res.fun == pytest.approx(f_best)
    np.testing.assert_allclose(h.to_numpy(res.x["v"]), x_best, rtol=1e-12)
    assert res.success is False and "best finite point" in res.message


def test_flat_ndarray_nan_run_still_fails_as_in_scipy():
    """SciPy's test_nan_values: an objective that is NaN everywhere is never a success."""
    from dict_minimize import numpy_api

    res = numpy_api.minimize(lambda x: np.nan, np.array([1.0]), method="L-BFGS-B")
    assert res.success is False and np.isnan(res.fun)


def test_flat_ndarray_nan_keeps_scipy_result_and_adds_the_best_point():
    """SciPy's test_bfgs_nan_return wants fun=NaN for a flat x0: kept, with best_x/best_fun beside it."""
    from dict_minimize import numpy_api

    res = numpy_api.minimize(lambda x: 0.0 if x[0] == 0 else np.nan, 0.0, jac=lambda x: np.ones_like(x))
    assert np.isnan(res.fun) and res.success is False
    assert res.best_fun == 0.0
    np.testing.assert_array_equal(res.best_x, [0.0])


def test_minus_infinity_is_a_minimum_not_a_fault(be):
    h = be

    def fun(x):
        v = float(np.ravel(h.to_numpy(x["v"]))[0])
        return h.asarray(-np.exp(-v) if v > -700 else -np.inf), {"v": h.asarray([np.exp(-v)])}

    res = h.minimize(fun, {"v": h.asarray([0.0])}, jac=True, method="BFGS")
    assert res.fun < -1e3 or res.fun == -np.inf
    assert "best finite point" not in res.message


def test_keyboard_interrupt_without_history_keeps_the_best_point_and_counts_no_iterations(be):
    """history=False: SciPy's loop has no callback, so iterations are not counted (nit None)."""
    h = be
    fun, x0, seen = recording_problem(h, 30, interrupt)
    res = h.minimize(fun, x0, jac=True, method="L-BFGS-B", history=False)
    assert res.success is False and "KeyboardInterrupt" in res.message
    assert res.nit is None and "history" not in res
    assert res.nfev == len(seen) + 1  # the interrupted call counts
    f_best, x_best = best_seen(seen)
    assert res.fun == pytest.approx(f_best)
    np.testing.assert_allclose(h.to_numpy(res.x["v"]), x_best, rtol=1e-12)
