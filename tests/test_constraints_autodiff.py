"""Constraints over pytrees, with Jacobians (and trust-constr's Hessians) by autodiff.

Problems with known answers are solved by every constrained method in
every backend (NumPy through SciPy's finite differences); the constraint
derivatives the driver hands SciPy are checked against hand-written ones.
JAX runs in float64 inside ``jax.enable_x64(True)`` (its configuration is
left as it was).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.optimize import (
    BFGS, SR1, HessianUpdateStrategy, LinearConstraint, NonlinearConstraint,
)

from conftest import capture_scipy_call

from dict_minimize.core.driver import build_layout

CONSTRAINED_METHODS = {
    "SLSQP": dict(options={"ftol": 1e-12, "maxiter": 500}),
    # SciPy's trust-constr can stop on `gtol` with the barrier parameter still
    # at ~1e-5, which leaves inequality-constrained answers ~1e-5 off: start it small.
    "trust-constr": dict(options={"gtol": 1e-12, "xtol": 1e-14, "barrier_tol": 1e-14,
                                  "initial_barrier_parameter": 1e-4, "maxiter": 3000}),
    "COBYLA": dict(tol=1e-10, options={"maxiter": 5000}),
    # COBYQA's default feasibility_tol (sqrt(eps)) sits at the rounding level of
    # these constraints and flips `success` between backends: 1e-7 still meets 1e-6.
    "COBYQA": dict(options={"final_tr_radius": 1e-10, "feasibility_tol": 1e-7, "maxiter": 5000}),
}
#: Distance to the known answer each method reaches with the options above.
X_TOL = {"SLSQP": 1e-6, "trust-constr": 1e-6, "COBYLA": 1e-4, "COBYQA": 1e-6}
MAX_VIOLATION = 1e-6

# The trust-constr runs of the NumPy backend use SciPy's quasi-Newton updates,
# which warn when a constraint is linear.
pytestmark = pytest.mark.filterwarnings("ignore:delta_grad == 0.0:UserWarning")


def backend_impl(h):
    return importlib.import_module(f"dict_minimize.{h.name}_api")._BACKEND


def leaf(h, x, key) -> np.ndarray:
    return np.asarray(h.to_numpy(x[key]), dtype=np.float64)


# ------------------------------------------------ problems with answers ----


@pytest.mark.parametrize("method", list(CONSTRAINED_METHODS))
def test_min_norm_on_the_sum_one_plane(be, method):
    # min ||x||^2 s.t. sum(x) = 1, x split over two vectors: every entry 1/n.
    x0 = {"a": be.asarray([0.5, -0.2, 0.1]), "b": be.asarray([0.3, 0.9])}
    sum_ = be.ops.sum

    def fun(x):
        return sum_(x["a"] ** 2) + sum_(x["b"] ** 2)

    con = {"type": "eq", "fun": lambda x: sum_(x["a"]) + sum_(x["b"]) - 1.0}
    res = be.minimize(fun, x0, method=method, constraints=con, **CONSTRAINED_METHODS[method])

    assert res.success, res.message
    z = np.r_[leaf(be, res.x, "a"), leaf(be, res.x, "b")]
    assert abs(z.sum() - 1.0) <= MAX_VIOLATION
    np.testing.assert_allclose(z, np.full(5, 0.2), atol=X_TOL[method], rtol=0)
    assert tuple(res.x["a"].shape) == (3,) and be.is_native(res.x["b"])


@pytest.mark.parametrize("method", list(CONSTRAINED_METHODS))
def test_nearest_point_of_the_unit_disc(be, method):
    # min (x-2)^2 + (y-1)^2 s.t. x^2 + y^2 <= 1: the answer is (2, 1)/sqrt(5).
    x0 = {"x": be.asarray(0.0), "y": be.asarray([0.0])}
    sum_ = be.ops.sum

    def fun(z):
        return (z["x"] - 2.0) ** 2 + sum_((z["y"] - 1.0) ** 2)

    inside = {"type": "ineq", "fun": lambda z: 1.0 - z["x"] ** 2 - sum_(z["y"] ** 2)}
    res = be.minimize(fun, x0, method=method, constraints=[inside], **CONSTRAINED_METHODS[method])

    assert res.success, res.message
    z = np.r_[leaf(be, res.x, "x"), leaf(be, res.x, "y")]
    assert z @ z - 1.0 <= MAX_VIOLATION
    np.testing.assert_allclose(z, np.array([2.0, 1.0]) / np.sqrt(5.0), atol=X_TOL[method], rtol=0)


def mixed_problem(h):
    """Several constraints at once, dicts and NonlinearConstraints, of shapes (), (3,), (2, 1), (1,).

    min ||p - (1, 0, 0)||^2 + ||q - [[2], [-0.2]]||^2
    s.t. sum(p) = 1, exp(p) <= e^0.5 (p <= 0.5), q^2 <= 0.25 (|q| <= 0.5), q[0] >= p[1].
    Answer (KKT by hand): p = (0.5, 0.25, 0.25), q = [[0.5], [-0.2]]; the last constraint is inactive.
    """
    ops = h.ops
    # Not at q = 0, where the gradient of q^2 vanishes (COBYQA stalls there).
    x0 = {"p": h.asarray([0.2, 0.3, 0.4]), "q": h.asarray([[0.3], [-0.1]])}
    target_p, target_q = h.asarray([1.0, 0.0, 0.0]), h.asarray([[2.0], [-0.2]])

    def fun(x):
        return ops.sum((x["p"] - target_p) ** 2) + ops.sum((x["q"] - target_q) ** 2)

    constraints = [
        {"type": "eq", "fun": lambda x: ops.sum(x["p"]) - 1.0},
        NonlinearConstraint(lambda x: ops.exp(x["p"]), -np.inf, np.exp(0.5)),
        NonlinearConstraint(lambda x: x["q"] ** 2, -np.inf, np.full((2, 1), 0.25)),
        {"type": "ineq", "fun": lambda x: x["q"][0] - x["p"][1]},
    ]
    answer = {"p": np.array([0.5, 0.25, 0.25]), "q": np.array([[0.5], [-0.2]])}
    return fun, x0, constraints, answer


def mixed_violation(p: np.ndarray, q: np.ndarray) -> float:
    return max(abs(p.sum() - 1.0), np.max(p - 0.5), np.max(q**2 - 0.25), p[1] - q[0, 0], 0.0)


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "COBYQA" else m for m in CONSTRAINED_METHODS]
)
def test_several_constraints_of_several_shapes(be, method):
    if method == "trust-constr" and not be.autodiff:
        pytest.skip("SciPy's trust-constr on finite differences and BFGS stalls here "
                    "(plain scipy.optimize.minimize too: 3000 iterations, 1e-2 off)")
    fun, x0, constraints, answer = mixed_problem(be)
    res = be.minimize(fun, x0, method=method, constraints=constraints, **CONSTRAINED_METHODS[method])

    assert res.success, res.message
    p, q = leaf(be, res.x, "p"), leaf(be, res.x, "q")
    assert q.shape == (2, 1)
    assert mixed_violation(p, q) <= MAX_VIOLATION
    np.testing.assert_allclose(p, answer["p"], atol=X_TOL[method], rtol=0)
    np.testing.assert_allclose(q, answer["q"], atol=X_TOL[method], rtol=0)


@pytest.mark.parametrize("method", list(CONSTRAINED_METHODS))
def test_linear_constraint_over_the_flat_vector(be, method):
    # Flat order is a0, a1, b0, b1: a0 + b1 = 1 and a1 + b0 <= 1.5, nearest to all ones.
    x0 = {"a": be.asarray([0.0, 0.0]), "b": be.asarray([0.0, 0.0])}
    sum_ = be.ops.sum

    def fun(x):
        return sum_((x["a"] - 1.0) ** 2) + sum_((x["b"] - 1.0) ** 2)

    # One equality and one inequality object: SLSQP warns when one object mixes them.
    linear = [LinearConstraint([[1.0, 0.0, 0.0, 1.0]], 1.0, 1.0),
              LinearConstraint([[0.0, 1.0, 1.0, 0.0]], -np.inf, 1.5)]
    res = be.minimize(fun, x0, method=method, constraints=linear, **CONSTRAINED_METHODS[method])

    assert res.success, res.message
    a, b = leaf(be, res.x, "a"), leaf(be, res.x, "b")
    assert max(abs(a[0] + b[1] - 1.0), a[1] + b[0] - 1.5) <= MAX_VIOLATION
    np.testing.assert_allclose(np.r_[a, b], [0.5, 0.75, 0.75, 0.5], atol=X_TOL[method], rtol=0)


# ----------------------------------------------------- Jacobians ----


def jacobian_x0(h):
    # Flat order: u0, u1, w00, w01, w10, w11 (n = 6).
    return {"u": h.asarray([0.3, -0.7]), "w": h.asarray([[0.5, -1.1], [0.8, 0.2]])}


def wide_constraint(ops):
    """m = 2 < n = 6: reverse mode."""
    return lambda x: ops.stack([ops.sum(x["u"] * x["w"][0]), ops.sin(x["u"][0]) * x["w"][1, 1]])


def wide_jacobian(u, w):
    return np.array([
        [w[0, 0], w[0, 1], u[0], u[1], 0.0, 0.0],
        [np.cos(u[0]) * w[1, 1], 0.0, 0.0, 0.0, 0.0, np.sin(u[0])],
    ])


def tall_constraint(ops):
    """m = 8 > n = 6 (shape (2, 2, 2)): forward mode."""
    return lambda x: ops.stack([x["u"][0] * x["w"], ops.exp(x["w"]) * x["u"][1]])


def tall_jacobian(u, w):
    jac = np.zeros((8, 6))
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        col = 2 + 2 * i + j
        jac[k, 0], jac[k, col] = w[i, j], u[0]
        jac[4 + k, 1], jac[4 + k, col] = np.exp(w[i, j]), np.exp(w[i, j]) * u[1]
    return jac


@pytest.mark.parametrize("shape", ["wide", "tall", "column"])
def test_value_and_jac_hook_matches_hand_written(ad, shape):
    impl = backend_impl(ad)
    x0 = jacobian_x0(ad)
    layout, _ = build_layout(impl, x0)
    if shape == "tall":
        cfun, jac_of = tall_constraint(ad.ops), tall_jacobian
    elif shape == "wide":
        cfun, jac_of = wide_constraint(ad.ops), wide_jacobian
    else:  # (k, 1)
        cfun, jac_of = (lambda x: ad.ops.reshape(wide_constraint(ad.ops)(x), (2, 1))), wide_jacobian
    value_and_jac = impl.value_and_jac(cfun, layout)
    rng = np.random.default_rng(7)
    for x in (np.r_[leaf(ad, x0, "u"), leaf(ad, x0, "w").ravel()], rng.uniform(-1, 1, 6)):
        x_before = x.copy()
        c, jac = value_and_jac(x, ())
        want = jac_of(x[:2], x[2:].reshape(2, 2))
        assert c.shape == (want.shape[0],) and jac.shape == want.shape
        assert c.dtype == np.float64 and jac.dtype == np.float64
        tree = {"u": ad.asarray(x[:2]), "w": ad.asarray(x[2:].reshape(2, 2))}
        np.testing.assert_allclose(c, np.ravel(ad.to_numpy(cfun(tree))), rtol=1e-12)
        np.testing.assert_allclose(jac, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(x, x_before)


def test_driver_hands_scipy_autodiff_jacobians(be, monkeypatch):
    x0 = jacobian_x0(be)
    seen = capture_scipy_call(monkeypatch)
    cons = [{"type": "ineq", "fun": wide_constraint(be.ops)}, {"type": "eq", "fun": tall_constraint(be.ops)}]
    be.minimize(lambda x: be.ops.sum(x["u"] ** 2), x0, method="SLSQP", constraints=cons)
    wide, tall = seen["constraints"]
    if not be.autodiff:  # NumPy: SciPy's finite differences, as in SciPy
        assert "jac" not in wide and "jac" not in tall
        return
    x = np.r_[leaf(be, x0, "u"), leaf(be, x0, "w").ravel()] + 0.1
    u, w = x[:2], x[2:].reshape(2, 2)
    np.testing.assert_allclose(wide["jac"](x), wide_jacobian(u, w), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tall["jac"](x), tall_jacobian(u, w), rtol=1e-12, atol=1e-14)
    assert wide["fun"](x).shape == (2,) and tall["fun"](x).shape == (8,)


def test_user_jacobians_dense_or_pytree_agree_with_autodiff(ad, monkeypatch):
    x0 = jacobian_x0(ad)
    cfun = wide_constraint(ad.ops)

    def dense(x):  # (m, n) over the flat vector
        return wide_jacobian(leaf(ad, x, "u"), leaf(ad, x, "w"))

    def per_leaf(x):  # x0-shaped, leaves (m, *leaf.shape)
        jac = dense(x)
        return {"u": ad.asarray(jac[:, :2]), "w": ad.asarray(jac[:, 2:].reshape(2, 2, 2))}

    seen = capture_scipy_call(monkeypatch)
    cons = [{"type": "ineq", "fun": cfun}, {"type": "ineq", "fun": cfun, "jac": dense},
            {"type": "ineq", "fun": cfun, "jac": per_leaf}]
    ad.minimize(lambda x: ad.ops.sum(x["u"] ** 2), x0, method="SLSQP", constraints=cons)
    x = np.array([0.1, 0.4, -0.3, 0.9, 1.2, -0.5])
    by_autodiff, by_dense, by_leaf = (c["jac"](x) for c in seen["constraints"])
    np.testing.assert_allclose(by_dense, by_autodiff, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(by_leaf, by_dense)


@pytest.mark.slow
def test_nonlinear_constraint_without_jac_uses_autodiff(ad):
    # SciPy's default jac ('2-point') counts as not given; an explicit
    # '3-point' is passed to SciPy, which then evaluates c(x) 2n more times per Jacobian.
    fun, x0, _, _ = mixed_problem(ad)
    results = {}
    for name, extra in (("default", {}), ("3-point", {"jac": "3-point"})):
        con = NonlinearConstraint(lambda x: ad.ops.exp(x["p"]), -np.inf, np.exp(0.5), **extra)
        results[name] = ad.minimize(fun, x0, method="trust-constr", constraints=con,
                                    **CONSTRAINED_METHODS["trust-constr"])
    for res in results.values():
        assert res.success, res.message
        np.testing.assert_allclose(leaf(ad, res.x, "p"), [0.5, 0.0, 0.0], atol=1e-6)
    by_autodiff, by_differences = results["default"], results["3-point"]
    n = 5
    # Autodiff: c(x) and its Jacobian once per point the objective visits.
    assert by_autodiff.constr_njev[0] > 0
    assert by_autodiff.constr_nfev[0] <= by_autodiff.nfev
    # Differences: 2n more evaluations of c(x) per Jacobian.
    assert by_differences.constr_njev[0] == 0
    assert by_differences.constr_nfev[0] >= 2 * n * by_differences.njev


# ------------------------------------------ trust-constr's Hessians ----


def test_trust_constr_gets_autodiff_constraint_hessians(be, monkeypatch):
    fun, x0, constraints, _ = mixed_problem(be)
    seen = capture_scipy_call(monkeypatch)
    be.minimize(fun, x0, method="trust-constr", constraints=constraints)
    translated = seen["constraints"]
    if not be.autodiff:  # NumPy: no Hessian callable, SciPy's quasi-Newton default stays
        for c in translated:
            hess = c.get("hess") if isinstance(c, dict) else c.hess
            assert hess is None or isinstance(hess, HessianUpdateStrategy)
        return
    assert all(isinstance(c, NonlinearConstraint) for c in translated)
    for c in translated:
        assert callable(c.hess) and not isinstance(c.hess, HessianUpdateStrategy)

    rng = np.random.default_rng(11)
    x = rng.uniform(-0.5, 0.5, 5)  # p0, p1, p2, q0, q1
    p_dir = rng.normal(size=5)
    # Hand-written sum_i v_i * Hess(c_i) @ p_dir for each constraint.
    v = rng.normal(size=3)
    exp_p = np.exp(x[:3])
    want = {
        0: np.zeros(5),  # sum(p) - 1 is linear
        1: np.r_[v * exp_p * p_dir[:3], 0.0, 0.0],  # exp(p): diagonal v_i e^{p_i}
        2: np.r_[np.zeros(3), 2.0 * v[:2] * p_dir[3:]],  # q^2 of shape (2, 1): diagonal 2 v_i
        3: np.zeros(5),  # q0 - p1 is linear
    }
    m = {0: 1, 1: 3, 2: 2, 3: 1}
    for i, c in enumerate(translated):
        op = c.hess(x, v[: m[i]])
        assert op.shape == (5, 5)
        np.testing.assert_allclose(op @ p_dir, want[i], rtol=1e-12, atol=1e-12)


def test_trust_constr_runs_on_the_autodiff_constraint_hessian(ad, monkeypatch):
    # The objective brings its own Hessian, so every autodiff product in this
    # run is a constraint Hessian product.
    impl = backend_impl(ad)
    products = [0]
    real = impl.linearize_grad

    def counting_linearize_grad(fun, layout):
        linearize = real(fun, layout)

        def counted(x, args):
            hvp = linearize(x, args)

            def counted_hvp(p):
                products[0] += 1
                return hvp(p)

            return counted_hvp

        return counted

    monkeypatch.setattr(impl, "linearize_grad", counting_linearize_grad)
    x0 = {"x": ad.asarray(0.0), "y": ad.asarray([0.0])}
    sum_ = ad.ops.sum

    def fun(z):
        return (z["x"] - 2.0) ** 2 + sum_((z["y"] - 1.0) ** 2)

    inside = NonlinearConstraint(lambda z: z["x"] ** 2 + sum_(z["y"] ** 2), -np.inf, 1.0)
    res = ad.minimize(fun, x0, method="trust-constr", constraints=inside, hess=lambda z: 2.0 * np.eye(2),
                      **CONSTRAINED_METHODS["trust-constr"])
    assert res.success, res.message
    z = np.r_[leaf(ad, res.x, "x"), leaf(ad, res.x, "y")]
    np.testing.assert_allclose(z, np.array([2.0, 1.0]) / np.sqrt(5.0), atol=1e-6)
    assert products[0] > 0


def test_user_constraint_hessian_is_kept(ad, monkeypatch):
    calls = []

    def circle_hess(z, v):
        calls.append(type(z))
        return 2.0 * float(np.asarray(v)[0]) * np.eye(2)

    x0 = {"x": ad.asarray(0.0), "y": ad.asarray([0.0])}
    sum_ = ad.ops.sum
    inside = NonlinearConstraint(lambda z: z["x"] ** 2 + sum_(z["y"] ** 2), -np.inf, 1.0, hess=circle_hess)
    res = ad.minimize(lambda z: (z["x"] - 2.0) ** 2 + sum_((z["y"] - 1.0) ** 2), x0, method="trust-constr",
                      constraints=inside, **CONSTRAINED_METHODS["trust-constr"])
    assert res.success, res.message
    np.testing.assert_allclose(leaf(ad, res.x, "x"), 2.0 / np.sqrt(5.0), atol=1e-6)
    assert calls and all(t is dict for t in calls)


@pytest.mark.parametrize("strategy", [
    lambda: SR1(),
    lambda: BFGS(exception_strategy="damp_update"),
])
def test_constraint_hessian_update_strategy_is_kept(ad, strategy, monkeypatch):
    # A plain BFGS() cannot be told from the one SciPy puts in when hess is not
    # given (it becomes autodiff); any other strategy is the user's choice.
    given = strategy()
    seen = capture_scipy_call(monkeypatch)
    x0 = {"x": ad.asarray(0.0), "y": ad.asarray([0.0])}
    inside = NonlinearConstraint(lambda z: z["x"] ** 2 + ad.ops.sum(z["y"] ** 2), -np.inf, 1.0, hess=given)
    ad.minimize(lambda z: (z["x"] - 2.0) ** 2, x0, method="trust-constr", constraints=inside)
    (translated,) = seen["constraints"]
    assert translated.hess is given
