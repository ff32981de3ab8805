"""Constraints with user Jacobians (or SciPy's finite differences), on every backend.

Autodiff constraint Jacobians have their own tests; here every constraint
Jacobian is the user's, except where NumPy's finite differences are the
point. Flat order: dict insertion order, C order within a leaf.
"""

from __future__ import annotations

import numpy as np
import optree
import pytest
from scipy.optimize import LinearConstraint, NonlinearConstraint

METHODS = ["SLSQP", "trust-constr"]


def sum_of_squares(h, center=0.0):
    def fun(x):
        total = 0.0
        for leaf in optree.tree_leaves(x, none_is_leaf=False):
            total = total + h.ops.sum((leaf - center) ** 2)
        return total

    return fun


def sum_of_squares_grad(h, center=0.0):
    return lambda x: optree.tree_map(lambda leaf: 2.0 * (leaf - center), x, none_is_leaf=False)


def uv_x0(h):
    return {"u": h.asarray([0.3, -0.1]), "v": h.asarray([0.5, 0.0, 1.0])}


def assert_leaf(h, leaf, value, atol=1e-6):
    if h.dtype_name(leaf) != "float64":  # JAX without x64 runs "float64" tests in float32
        atol = max(atol, 1e-4)
    np.testing.assert_allclose(h.to_numpy(leaf).astype(np.float64), value, atol=atol)


def options_for(method):
    return {"gtol": 1e-10, "xtol": 1e-12} if method == "trust-constr" else {"ftol": 1e-12}


# ---- the known answer: min ||x||^2 s.t. sum(x) = 1 -> every element 1/5 ------------


def total(h, x):
    return h.ops.sum(x["u"]) + h.ops.sum(x["v"])


@pytest.mark.parametrize("method", METHODS)
def test_sum_to_one_dict_eq_with_pytree_jac(backend, method):
    h = backend
    constraint = {
        "type": "eq",
        "fun": lambda x, target: total(h, x) - target,
        "jac": lambda x, target: {"u": h.asarray(np.ones((1, 2))), "v": h.asarray(np.ones((1, 3)))},
        "args": (1.0,),
    }
    res = h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), method=method,
                     constraints=[constraint], options=options_for(method))
    assert res.success, res.message
    assert_leaf(h, res.x["u"], 0.2)
    assert_leaf(h, res.x["v"], 0.2)


@pytest.mark.parametrize("method", METHODS)
def test_sum_to_one_without_constraint_jac(backend, method, request):
    """No constraint jac: finite differences in NumPy (autodiff elsewhere)."""
    h = backend
    constraint = {"type": "eq", "fun": lambda x: total(h, x) - 1.0}
    res = h.minimize(sum_of_squares(h), uv_x0(h), method=method, constraints=constraint,
                     options=options_for(method))
    assert_leaf(h, res.x["u"], 0.2, atol=1e-5)
    assert_leaf(h, res.x["v"], 0.2, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_sum_to_one_nonlinear_constraint_dense_jac(backend, method):
    h = backend
    con = NonlinearConstraint(lambda x: total(h, x), 1.0, 1.0, jac=lambda x: np.ones((1, 5)))
    res = h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), method=method,
                     constraints=[con], options=options_for(method))
    assert_leaf(h, res.x["u"], 0.2)
    assert_leaf(h, res.x["v"], 0.2)


def test_default_method_with_constraints(backend):
    h = backend
    constraint = {"type": "eq", "fun": lambda x: total(h, x) - 1.0,
                  "jac": lambda x: h.asarray(np.ones(5))}
    res = h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), constraints=constraint)
    assert "nit" in res and res.success, res.message
    assert_leaf(h, res.x["u"], 0.2)


# ---- eq and ineq dicts with args -----------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_eq_and_ineq_dicts_with_args(backend, method):
    """min sum((x-2)^2) s.t. sum(u) <= cap, v0 - v1 == gap -> u = cap/2, v = (2.5, 1.5, 2)."""
    h = backend
    calls = {"ineq": set(), "eq": set()}

    def cap_fun(x, cap):
        calls["ineq"].add(cap)
        return cap - h.ops.sum(x["u"])

    def cap_jac(x, cap):  # leaves shaped like the leaf (m = 1 left out)
        return {"u": h.asarray([-1.0, -1.0]), "v": h.asarray(np.zeros(3))}

    def gap_fun(x, gap):
        calls["eq"].add(gap)
        return x["v"][0] - x["v"][1] - gap

    def gap_jac(x, gap):  # leaves (1, *leaf.shape)
        return {"u": h.asarray(np.zeros((1, 2))), "v": h.asarray([[1.0, -1.0, 0.0]])}

    constraints = [
        {"type": "ineq", "fun": cap_fun, "jac": cap_jac, "args": (1.0,)},
        {"type": "eq", "fun": gap_fun, "jac": gap_jac, "args": (1.0,)},
    ]
    res = h.minimize(sum_of_squares(h, 2.0), uv_x0(h), jac=sum_of_squares_grad(h, 2.0), method=method,
                     constraints=constraints, options=options_for(method))
    assert calls == {"ineq": {1.0}, "eq": {1.0}}
    atol = 1e-6 if method == "SLSQP" else 1e-4  # interior point: inside the inequality
    assert_leaf(h, res.x["u"], 0.5, atol=atol)
    assert_leaf(h, res.x["v"], [2.5, 1.5, 2.0], atol=atol)


@pytest.mark.parametrize("method", ["COBYLA", "COBYQA"])
def test_ineq_dict_gradient_free(backend, method):
    h = backend
    constraint = {"type": "ineq", "fun": lambda x, cap: cap - h.ops.sum(x["u"]), "args": (1.0,)}
    res = h.minimize(sum_of_squares(h, 2.0), {"u": h.asarray([0.0, 0.0])}, method=method,
                     constraints=[constraint], options={"maxiter": 2000} if method == "COBYLA" else {})
    assert_leaf(h, res.x["u"], 0.5, atol=1e-3)


# ---- NonlinearConstraint with a tensor value ----------------------------------------

# c(x) = (sum(u), sum(v)) == (1, 1.5)  ->  u = 0.5, v = 0.5 (minimum norm)
DENSE_JAC = np.array([[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]])


def pair_value(h, shape):
    return lambda x: h.ops.reshape(h.ops.stack([h.ops.sum(x["u"]), h.ops.sum(x["v"])]), shape)


def pytree_jac(h):
    return lambda x: {"u": h.asarray(DENSE_JAC[:, :2]), "v": h.asarray(DENSE_JAC[:, 2:])}


@pytest.mark.parametrize("method, shape, jac_form", [
    ("SLSQP", (2,), "dense"), ("SLSQP", (2,), "pytree"),
    ("SLSQP", (2, 1), "dense"), ("SLSQP", (2, 1), "pytree"),
    ("trust-constr", (2,), "pytree"), ("trust-constr", (2, 1), "dense"),
])
def test_nonlinear_constraint_tensor_value(backend, method, shape, jac_form):
    h = backend
    jac = (lambda x: h.asarray(DENSE_JAC)) if jac_form == "dense" else pytree_jac(h)
    con = NonlinearConstraint(pair_value(h, shape), [1.0, 1.5], [1.0, 1.5], jac=jac)
    res = h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), method=method,
                     constraints=con, options=options_for(method))
    assert res.success, res.message
    assert_leaf(h, res.x["u"], 0.5)
    assert_leaf(h, res.x["v"], 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_nonlinear_constraint_inequality_with_tensor_value(backend, method):
    """lb <= c(x) with c of shape (2, 1): only the first row binds."""
    h = backend
    con = NonlinearConstraint(pair_value(h, (2, 1)), [1.0, -np.inf], [np.inf, 10.0], jac=pytree_jac(h))
    res = h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), method=method,
                     constraints=[con], options=options_for(method))
    atol = 1e-6 if method == "SLSQP" else 1e-4
    assert_leaf(h, res.x["u"], 0.5, atol=atol)
    assert_leaf(h, res.x["v"], 0.0, atol=atol)


# ---- LinearConstraint over the flat vector ------------------------------------------

# x0 = {'w': (2, 2), 'u': (2,)}: flat = w00 w01 w10 w11 u0 u1 (insertion order, C order).
#   w01 + u0 == 2  ->  w01 = u0 = 1          u1 >= 3  ->  u1 = 3      everything else 0
LINEAR_A = np.array([[0.0, 1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("method", METHODS + ["COBYQA"])
def test_linear_constraint_uses_flat_order(backend, method):
    h = backend
    x0 = {"w": h.asarray(np.zeros((2, 2))), "u": h.asarray([0.0, 0.0])}
    con = LinearConstraint(LINEAR_A, [2.0, 3.0], [2.0, np.inf])
    jac = None if method == "COBYQA" else sum_of_squares_grad(h)
    res = h.minimize(sum_of_squares(h), x0, jac=jac, method=method, constraints=[con],
                     options={} if method == "COBYQA" else options_for(method))
    atol = 1e-6 if method == "SLSQP" else 1e-3  # interior point: inside u1 >= 3
    assert_leaf(h, res.x["w"], [[0.0, 1.0], [0.0, 0.0]], atol=atol)
    assert_leaf(h, res.x["u"], [1.0, 3.0], atol=atol)


def test_linear_and_nonlinear_together(backend):
    h = backend
    x0 = {"w": h.asarray(np.zeros((2, 2))), "u": h.asarray([0.0, 0.0])}
    linear = LinearConstraint(LINEAR_A[:1], 2.0, 2.0)  # w01 + u0 == 2
    nonlinear = {"type": "eq", "fun": lambda x: x["u"][1] - 3.0,
                 "jac": lambda x: {"w": h.asarray(np.zeros((2, 2))), "u": h.asarray([0.0, 1.0])}}
    res = h.minimize(sum_of_squares(h), x0, jac=sum_of_squares_grad(h), method="SLSQP",
                     constraints=[linear, nonlinear])
    assert_leaf(h, res.x["w"], [[0.0, 1.0], [0.0, 0.0]])
    assert_leaf(h, res.x["u"], [1.0, 3.0])


# ---- bad constraints ------------------------------------------------------------------


def test_constraint_unknown_field(backend):
    h = backend
    con = {"type": "eq", "fun": lambda x: total(h, x), "jacobian": None}
    with pytest.raises(ValueError, match="jacobian"):
        h.minimize(sum_of_squares(h), uv_x0(h), method="SLSQP", constraints=[con])


def test_constraint_bad_type(backend):
    h = backend
    con = {"type": "equal", "fun": lambda x: total(h, x)}
    with pytest.raises(ValueError, match="equal"):
        h.minimize(sum_of_squares(h), uv_x0(h), method="SLSQP", constraints=[con])


def test_constraint_jac_wrong_shape(backend):
    h = backend
    con = {"type": "eq", "fun": lambda x: total(h, x) - 1.0, "jac": lambda x: h.asarray(np.ones(4))}
    with pytest.raises(ValueError, match="jac"):
        h.minimize(sum_of_squares(h), uv_x0(h), jac=sum_of_squares_grad(h), method="SLSQP",
                   constraints=[con])
