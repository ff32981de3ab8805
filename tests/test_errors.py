"""Bad input fails early with a clear error that names the argument or the key path."""

from __future__ import annotations

import numpy as np
import pytest


class ObjectiveBroke(Exception):
    """Raised by a user objective; must reach the caller unchanged."""


def good_quadratic(h):
    def fun(x):
        return h.ops.sum((x["good"] - 1.0) ** 2)

    return fun


# ---- x0 leaves ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["int_tensor", "complex_tensor", "bool_tensor"])
def test_non_float_leaf_names_key_path(backend, kind):
    h = backend
    make = getattr(h, kind)
    if make is None:
        pytest.skip(f"{h.name} has no {kind}")
    x0 = {"good": h.asarray([0.0]), "outer": {"inner": make()}}
    with pytest.raises(TypeError, match=r"x0\['outer'\]\['inner'\]"):
        h.minimize(good_quadratic(h), x0)


def test_non_float_leaf_in_a_list_names_index(backend):
    h = backend
    x0 = {"good": h.asarray([0.0]), "layers": [h.asarray([1.0]), h.int_tensor()]}
    with pytest.raises(TypeError, match=r"x0\['layers'\]\[1\]"):
        h.minimize(good_quadratic(h), x0)


def test_non_tensor_leaf_names_key_path(backend):
    h = backend
    x0 = {"good": h.asarray([0.0]), "name": "not a tensor"}
    with pytest.raises(TypeError, match=r"x0\['name'\]"):
        h.minimize(good_quadratic(h), x0)


@pytest.mark.parametrize("empty", [{}, [], (), {"a": {}, "b": []}])
def test_empty_pytree(backend, empty):
    h = backend
    with pytest.raises(ValueError, match="empty"):
        h.minimize(lambda x: 0.0, empty)


def test_pytree_with_only_zero_size_leaves(backend):
    h = backend
    with pytest.raises(ValueError, match="no elements"):
        h.minimize(lambda x: 0.0, {"a": h.asarray(np.zeros(0)), "b": h.asarray(np.zeros((2, 0)))})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x0_names_key(backend, bad):
    h = backend
    x0 = {"good": h.asarray([0.0, 1.0]), "nested": {"bad": h.asarray([[1.0, 2.0], [3.0, bad]])}}
    with pytest.raises(ValueError, match=r"x0\['nested'\]\['bad'\]"):
        h.minimize(good_quadratic(h), x0)


# ---- the objective and its gradient -------------------------------------------------


def test_non_scalar_objective(backend):
    h = backend
    with pytest.raises(ValueError, match="scalar"):
        h.minimize(lambda x: x["good"] * 2.0, {"good": h.asarray([1.0, 2.0])}, method="L-BFGS-B")


def test_non_scalar_objective_gradient_free(backend):
    h = backend
    with pytest.raises(ValueError, match="scalar"):
        h.minimize(lambda x: x["good"] * 2.0, {"good": h.asarray([1.0, 2.0])}, method="Nelder-Mead")


def test_exception_in_fun_propagates_with_its_type(backend):
    h = backend

    def fun(x):
        raise ObjectiveBroke("the user's own failure")

    with pytest.raises(ObjectiveBroke, match="the user's own failure"):
        h.minimize(fun, {"good": h.asarray([1.0])}, method="L-BFGS-B")


def test_exception_in_jac_true_fun_propagates(backend):
    h = backend
    calls = []

    def fun(x):
        calls.append(1)
        if len(calls) > 2:
            raise ObjectiveBroke("third call")
        value = h.ops.sum((x["good"] - 3.0) ** 2)
        return value, {"good": 2.0 * (x["good"] - 3.0)}

    with pytest.raises(ObjectiveBroke):
        h.minimize(fun, {"good": h.asarray([1.0])}, jac=True, method="BFGS")


def test_exception_in_callback_propagates(backend):
    h = backend

    def callback(intermediate_result):
        raise ObjectiveBroke("from the callback")

    with pytest.raises(ObjectiveBroke):
        h.minimize(good_quadratic(h), {"good": h.asarray([5.0])}, method="L-BFGS-B", callback=callback)


def jac_true_with(h, grad_of):
    def fun(x):
        return h.ops.sum((x["w"] - 1.0) ** 2) + h.ops.sum((x["b"] - 1.0) ** 2), grad_of(x)

    return fun


def test_jac_true_gradient_missing_key(backend):
    h = backend
    fun = jac_true_with(h, lambda x: {"w": 2.0 * (x["w"] - 1.0)})
    with pytest.raises(ValueError, match=r"'b'"):
        h.minimize(fun, {"w": h.asarray([0.0, 0.0]), "b": h.asarray(0.0)}, jac=True, method="BFGS")


def test_jac_true_gradient_wrong_shape(backend):
    h = backend
    fun = jac_true_with(h, lambda x: {"w": h.asarray([1.0, 2.0, 3.0]), "b": 2.0 * (x["b"] - 1.0)})
    with pytest.raises(ValueError, match=r"x0\['w'\].*shape"):
        h.minimize(fun, {"w": h.asarray([0.0, 0.0]), "b": h.asarray(0.0)}, jac=True, method="BFGS")


def test_jac_true_gradient_extra_key(backend):
    h = backend
    fun = jac_true_with(h, lambda x: {"w": 2.0 * (x["w"] - 1.0), "b": 2.0 * (x["b"] - 1.0),
                                      "stray": h.asarray(1.0)})
    with pytest.raises(ValueError, match="stray"):
        h.minimize(fun, {"w": h.asarray([0.0, 0.0]), "b": h.asarray(0.0)}, jac=True, method="BFGS")


def test_jac_true_not_a_pair(backend):
    h = backend
    with pytest.raises(ValueError, match="pair"):
        h.minimize(lambda x: h.ops.sum(x["w"] ** 2), {"w": h.asarray([1.0])}, jac=True, method="BFGS")


def test_jac_callable_missing_key(backend):
    h = backend
    with pytest.raises(ValueError, match=r"'b'"):
        h.minimize(lambda x: h.ops.sum(x["w"] ** 2) + h.ops.sum(x["b"] ** 2),
                   {"w": h.asarray([1.0]), "b": h.asarray([1.0])},
                   jac=lambda x: {"w": 2.0 * x["w"]}, method="BFGS")


# ---- arguments -----------------------------------------------------------------------


def test_unknown_keyword_names_it(backend):
    h = backend
    with pytest.raises(TypeError, match="learning_rate"):
        h.minimize(good_quadratic(h), {"good": h.asarray([0.0])}, learning_rate=0.1)


def test_fun_not_callable(backend):
    h = backend
    with pytest.raises(TypeError, match="fun"):
        h.minimize(3.0, {"good": h.asarray([0.0])})


def test_options_not_a_dict(backend):
    h = backend
    with pytest.raises(TypeError, match="options"):
        h.minimize(good_quadratic(h), {"good": h.asarray([0.0])}, options=[("maxiter", 3)])


@pytest.mark.parametrize("bad", [0, -1.0, "soon"])
def test_max_time_must_be_positive(backend, bad):
    h = backend
    with pytest.raises(ValueError, match="max_time"):
        h.minimize(good_quadratic(h), {"good": h.asarray([0.0])}, max_time=bad)


def test_callback_not_callable(backend):
    h = backend
    with pytest.raises(TypeError, match="callback"):
        h.minimize(good_quadratic(h), {"good": h.asarray([0.0])}, callback="print")


def test_x0_untouched_after_an_error(backend):
    h = backend
    x0 = {"good": h.asarray([0.5, 0.25])}

    def fun(x):
        raise ObjectiveBroke()

    with pytest.raises(ObjectiveBroke):
        h.minimize(fun, x0)
    np.testing.assert_array_equal(h.to_numpy(x0["good"]), [0.5, 0.25])
