"""``argmin``: the solution differentiated by the implicit function theorem, in every autodiff backend.

Closed forms (float64, relative error <= 1e-6): ridge regression, the
DiffOpt ReLU, a box projection with tensor bounds, softmax as an
entropy-regularized argmin on the simplex, sparsemax (active bounds and an
equality together), an equality-constrained QP. Random pytree problems
against central differences; warnings and errors. JAX runs in float64
inside ``jax.enable_x64(True)``.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from dict_minimize.core.implicit import ArgminError, ArgminWarning

TIGHT = dict(options={"gtol": 1e-11, "maxiter": 2000})  # BFGS
TIGHT_BOX = dict(method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 2000})
SLSQP = dict(method="SLSQP", options={"ftol": 1e-15, "maxiter": 500})


def api(h):
    return importlib.import_module(f"dict_minimize.{h.name}_api")


def jacobian(h, f, *inputs):
    """Jacobians of the array ``f(*inputs)`` with respect to each input, as NumPy (reverse mode)."""
    if h.name == "torch":
        import torch

        inputs = [t.detach().requires_grad_() for t in inputs]
        out = torch.autograd.functional.jacobian(f, tuple(inputs))
        return [np.asarray(j.detach().numpy()) for j in out]
    if h.name == "jax":
        import jax

        return [np.asarray(j) for j in jax.jacrev(f, argnums=tuple(range(len(inputs))))(*inputs)]
    import tensorflow as tf

    inputs = [tf.Variable(t) for t in inputs]
    with tf.GradientTape(persistent=True) as tape:
        out = f(*inputs)
    return [np.asarray(tape.jacobian(out, t, experimental_use_pfor=False)) for t in inputs]


def vjp(h, f, v, *inputs):
    """``v' d f / d input`` for each input (one reverse pass)."""
    if h.name == "torch":
        import torch

        inputs = [t.detach().requires_grad_() for t in inputs]
        out = f(*inputs)
        grads = torch.autograd.grad(out, inputs, grad_outputs=torch.as_tensor(v, dtype=out.dtype),
                                    allow_unused=True)
        return [None if g is None else g.numpy() for g in grads]
    if h.name == "jax":
        import jax

        out, pullback = jax.vjp(f, *inputs)
        return [np.asarray(g) for g in pullback(jax.numpy.asarray(v, dtype=out.dtype))]
    import tensorflow as tf

    inputs = [tf.Variable(t) for t in inputs]
    with tf.GradientTape() as tape:
        out = f(*inputs)
    grads = tape.gradient(out, inputs, output_gradients=tf.constant(v, dtype=out.dtype))
    return [None if g is None else g.numpy() for g in grads]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def sum_(h, t, axis=None):
    return h.ops.sum(t) if axis is None else h.ops.sum(t, axis)


def matvec(h, A, w):
    return sum_(h, A * w[None, :], 1)


# ------------------------------------------------------------ closed forms ----


def test_ridge_regression(ad):
    rng = np.random.default_rng(0)
    X_np, y_np, lam_np = rng.normal(size=(30, 6)), rng.normal(size=30), 0.7
    X, y, lam = ad.asarray(X_np), ad.asarray(y_np), ad.asarray(lam_np)

    def loss(w, X, y, lam):
        r = matvec(ad, X, w["w"]) - y
        return 0.5 * sum_(ad, r * r) + 0.5 * lam * sum_(ad, w["w"] ** 2)

    def solve(lam, y):
        return api(ad).argmin(loss, {"w": ad.asarray(np.zeros(6))}, args=(X, y, lam), **TIGHT)["w"]

    A = X_np.T @ X_np + lam_np * np.eye(6)
    w_star = np.linalg.solve(A, X_np.T @ y_np)
    np.testing.assert_allclose(ad.to_numpy(solve(lam, y)), w_star, rtol=1e-8)
    d_lam, d_y = jacobian(ad, solve, lam, y)
    assert rel(d_lam, -np.linalg.solve(A, w_star)) <= 1e-6
    assert rel(d_y, np.linalg.solve(A, X_np.T)) <= 1e-6


def test_diffopt_relu(ad):
    # relu(y) = argmin ||x||^2 - 2 y'x subject to x >= 0, as DiffOpt.jl's tutorial writes it.
    y_np = np.array([1.5, -2.0, 0.5, -0.1, 3.0])
    y = ad.asarray(y_np)

    def f(x, y):
        return sum_(ad, x["x"] ** 2) - 2 * sum_(ad, y * x["x"])

    def relu(y):
        return api(ad).argmin(f, {"x": ad.asarray(np.ones(5))}, args=(y,), bounds={"x": (0.0, None)},
                              **TIGHT_BOX)["x"]

    np.testing.assert_allclose(ad.to_numpy(relu(y)), np.maximum(y_np, 0), rtol=1e-8, atol=1e-12)
    (J,) = jacobian(ad, relu, y)
    np.testing.assert_allclose(J, np.diag((y_np > 0).astype(float)), atol=1e-8)


def test_box_projection_with_tensor_bounds(ad):
    # x* = clip(t, lo, hi): dx/dt = 1 inside, dx/dlo = 1 where clipped low, dx/dhi where clipped high.
    t_np = np.array([2.0, 0.3, 0.1, -3.0])
    lo_np, hi_np = np.array([0.0, -1.0, 0.5, -1.0]), np.array([1.0, 1.0, 2.0, 0.0])

    def f(x, t):
        return sum_(ad, (x - t) ** 2)

    def project(lo, hi, t):
        return api(ad).argmin(f, ad.asarray(np.zeros(4)), args=(t,), bounds=(lo, hi), **TIGHT_BOX)

    x = project(ad.asarray(lo_np), ad.asarray(hi_np), ad.asarray(t_np))
    np.testing.assert_allclose(ad.to_numpy(x), np.clip(t_np, lo_np, hi_np), atol=1e-10)
    J_lo, J_hi, J_t = jacobian(ad, project, ad.asarray(lo_np), ad.asarray(hi_np), ad.asarray(t_np))
    inside = (t_np > lo_np) & (t_np < hi_np)
    np.testing.assert_allclose(J_t, np.diag(inside.astype(float)), atol=1e-8)
    np.testing.assert_allclose(J_lo, np.diag((t_np <= lo_np).astype(float)), atol=1e-8)
    np.testing.assert_allclose(J_hi, np.diag((t_np >= hi_np).astype(float)), atol=1e-8)


def test_box_projection_with_bounds_per_key(ad):
    # The bound tensor broadcasts over its leaf: its cotangent sums over the broadcast.
    t_np = np.array([[2.0, 0.3], [-0.5, 4.0]])
    hi_np = np.array([1.0, 1.5])  # per column

    def f(x, t):
        return sum_(ad, (x["a"] - t) ** 2) + sum_(ad, (x["b"] - 1.0) ** 2)

    def project(hi):
        x = api(ad).argmin(f, {"a": ad.asarray(np.zeros((2, 2))), "b": ad.asarray(np.zeros(3))},
                           args=(ad.asarray(t_np),), bounds={"a": (None, hi)}, **TIGHT_BOX)
        return x["a"]

    x = project(ad.asarray(hi_np))
    np.testing.assert_allclose(ad.to_numpy(x), np.minimum(t_np, hi_np), atol=1e-10)
    (J,) = jacobian(ad, project, ad.asarray(hi_np))
    expected = np.zeros((2, 2, 2))
    for i, j in zip(*np.nonzero(t_np >= hi_np)):
        expected[i, j, j] = 1.0
    np.testing.assert_allclose(J, expected, atol=1e-8)


def test_softmax_as_entropy_argmin_on_the_simplex(ad):
    theta_np = np.array([0.3, -0.5, 1.0, 0.2, -1.2])
    p_np = np.exp(theta_np) / np.exp(theta_np).sum()

    def f(x, theta):
        return sum_(ad, x * ad.ops.log(x)) - sum_(ad, theta * x)

    def softmax(theta):
        return api(ad).argmin(f, ad.asarray(np.full(5, 0.2)), args=(theta,), bounds=(1e-9, 1.0),
                              constraints={"type": "eq", "fun": lambda x: sum_(ad, x) - 1.0}, **SLSQP)

    np.testing.assert_allclose(ad.to_numpy(softmax(ad.asarray(theta_np))), p_np, rtol=1e-7)
    (J,) = jacobian(ad, softmax, ad.asarray(theta_np))
    assert rel(J, np.diag(p_np) - np.outer(p_np, p_np)) <= 1e-6


def test_sparsemax_active_bounds_and_an_equality(ad):
    # Euclidean projection onto the simplex: support S, dp/dt = I - 11'/|S| on S, 0 elsewhere.
    t_np = np.array([1.2, 0.9, -0.4, 0.1, -1.0])
    tau = (1.2 + 0.9 - 1.0) / 2  # support {0, 1}
    p_np = np.maximum(t_np - tau, 0)

    def f(x, t):
        return 0.5 * sum_(ad, (x - t) ** 2)

    def sparsemax(t):
        return api(ad).argmin(f, ad.asarray(np.full(5, 0.2)), args=(t,), bounds=(0.0, None),
                              constraints={"type": "eq", "fun": lambda x: sum_(ad, x) - 1.0}, **SLSQP)

    np.testing.assert_allclose(ad.to_numpy(sparsemax(ad.asarray(t_np))), p_np, atol=1e-9)
    (J,) = jacobian(ad, sparsemax, ad.asarray(t_np))
    expected = np.zeros((5, 5))
    expected[:2, :2] = np.eye(2) - 0.5
    np.testing.assert_allclose(J, expected, atol=1e-7)


@pytest.mark.parametrize("method", ["SLSQP", "trust-constr"])
def test_equality_constrained_qp(ad, method):
    # min 1/2 x'Qx + c'x s.t. Ax = b: [x; nu] = K^-1 [-c; b], K = [[Q, A'], [A, 0]].
    rng = np.random.default_rng(1)
    n, m = 6, 2
    M = rng.normal(size=(n, n))
    Q_np = M @ M.T + n * np.eye(n)
    A_np, b_np, c_np = rng.normal(size=(m, n)), rng.normal(size=m), rng.normal(size=n)
    Q, A = ad.asarray(Q_np), ad.asarray(A_np)

    def f(x, c):
        return 0.5 * sum_(ad, x * matvec(ad, Q, x)) + sum_(ad, c * x)

    def qp(b, c):
        con = {"type": "eq", "fun": lambda x, A, b: matvec(ad, A, x) - b, "args": (A, b)}
        opts = ({"gtol": 1e-13, "xtol": 1e-15, "maxiter": 2000} if method == "trust-constr"
                else {"ftol": 1e-15, "maxiter": 500})
        return api(ad).argmin(f, ad.asarray(np.zeros(n)), args=(c,), method=method, constraints=con,
                              options=opts)

    K = np.block([[Q_np, A_np.T], [A_np, np.zeros((m, m))]])
    Ki = np.linalg.inv(K)
    x_star = (Ki @ np.concatenate([-c_np, b_np]))[:n]
    np.testing.assert_allclose(ad.to_numpy(qp(ad.asarray(b_np), ad.asarray(c_np))), x_star, rtol=1e-7)
    J_b, J_c = jacobian(ad, qp, ad.asarray(b_np), ad.asarray(c_np))
    assert rel(J_b, Ki[:n, n:]) <= 1e-6
    assert rel(J_c, -Ki[:n, :n]) <= 1e-6


@pytest.mark.parametrize("violated", [True, False])
def test_projection_onto_a_half_space(ad, violated):
    # min ||x - t||^2 s.t. a'x <= b ('ineq': b - a'x >= 0). Active: dx/dt = I - aa'/a'a, dx/db = a/a'a.
    a_np = np.array([1.0, 2.0, -1.0])
    t_np = np.array([1.0, 1.0, 0.5]) if violated else np.array([-1.0, 0.0, 0.5])
    b_np = np.array(0.7)
    a = ad.asarray(a_np)

    def f(x, t):
        return sum_(ad, (x - t) ** 2)

    def project(t, b):
        con = {"type": "ineq", "fun": lambda x, a, b: b - sum_(ad, a * x), "args": (a, b)}
        return api(ad).argmin(f, ad.asarray(np.zeros(3)), args=(t,), constraints=con, **SLSQP)

    J_t, J_b = jacobian(ad, project, ad.asarray(t_np), ad.asarray(b_np))
    if violated:
        assert a_np @ t_np > b_np
        np.testing.assert_allclose(J_t, np.eye(3) - np.outer(a_np, a_np) / (a_np @ a_np), atol=1e-8)
        np.testing.assert_allclose(J_b, a_np / (a_np @ a_np), atol=1e-8)
    else:
        np.testing.assert_allclose(J_t, np.eye(3), atol=1e-8)
        np.testing.assert_allclose(J_b, np.zeros(3), atol=1e-8)


@pytest.mark.parametrize("method", ["SLSQP", "trust-constr"])
def test_projection_onto_the_sphere_nonlinear_constraint(ad, method):
    # min ||x - t||^2 s.t. ||x||^2 = 1: x = t/||t||, dx/dt = (I - xx')/||t|| (uses the constraint's Hessian).
    from scipy.optimize import NonlinearConstraint

    t_np = np.array([0.3, -1.2, 2.0])
    x_np = t_np / np.linalg.norm(t_np)

    def f(x, t):
        return sum_(ad, (x - t) ** 2)

    def project(t):
        con = NonlinearConstraint(lambda x: sum_(ad, x * x), 1.0, 1.0)
        opts = ({"gtol": 1e-13, "xtol": 1e-15, "maxiter": 3000} if method == "trust-constr"
                else {"ftol": 1e-15, "maxiter": 500})
        return api(ad).argmin(f, ad.asarray(np.array([1.0, 0.0, 0.0])), args=(t,), constraints=con,
                              method=method, options=opts)

    np.testing.assert_allclose(ad.to_numpy(project(ad.asarray(t_np))), x_np, rtol=1e-7)
    (J,) = jacobian(ad, project, ad.asarray(t_np))
    assert rel(J, (np.eye(3) - np.outer(x_np, x_np)) / np.linalg.norm(t_np)) <= 1e-6


def test_linear_constraint_and_bounds_object_with_tensor_sides(ad):
    # min ||x - t||^2 over {'p': (3,)} s.t. sum p = 1 (LinearConstraint), p <= hi (Bounds of dicts).
    from scipy.optimize import Bounds, LinearConstraint

    t_np, hi_np = np.array([0.9, 0.5, -0.2]), np.array([0.4, 1.0, 1.0])
    # p0 = hi0 = 0.4 (active), the rest share 0.6: p1 - p2 = t1 - t2 -> p = (0.4, 0.95, 0.25) - shift
    p1 = (0.6 + t_np[1] - t_np[2]) / 2
    p_np = np.array([0.4, p1, 0.6 - p1])

    def f(x, t):
        return sum_(ad, (x["p"] - t) ** 2)

    def project(t, hi):
        bounds = Bounds({"p": ad.asarray(np.full(3, -5.0))}, {"p": hi})
        return api(ad).argmin(f, {"p": ad.asarray(np.full(3, 1 / 3))}, args=(t,), bounds=bounds,
                              constraints=LinearConstraint(np.ones((1, 3)), 1.0, 1.0), **SLSQP)["p"]

    np.testing.assert_allclose(ad.to_numpy(project(ad.asarray(t_np), ad.asarray(hi_np))), p_np, atol=1e-9)
    J_t, J_hi = jacobian(ad, project, ad.asarray(t_np), ad.asarray(hi_np))
    expected_t = np.zeros((3, 3))
    expected_t[1:, 1:] = np.eye(2) - 0.5
    expected_hi = np.zeros((3, 3))
    expected_hi[:, 0] = [1.0, -0.5, -0.5]
    np.testing.assert_allclose(J_t, expected_t, atol=1e-8)
    np.testing.assert_allclose(J_hi, expected_hi, atol=1e-8)


# ---------------------------------------------- against central differences ----


def _pytree_problem(h):
    """A smooth strongly convex problem over {'a': (3,), 'b': (2, 2)} with params in a dict."""
    rng = np.random.default_rng(7)
    theta = {"s": rng.uniform(0.5, 1.5, size=3), "m": rng.normal(size=(2, 2))}

    def f(x, p, k):
        a, b = x["a"], x["b"]
        return (sum_(h, p["s"] * h.ops.exp(a)) - sum_(h, a) * k
                + sum_(h, (b - p["m"]) ** 2) + 0.25 * sum_(h, b ** 4) + sum_(h, a[:2] * b[0]) * 0.1)

    return f, None, theta


@pytest.mark.filterwarnings("ignore::dict_minimize.core.implicit.ArgminWarning")
@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-4), ("float32", 1e-3)])
def test_random_pytree_against_central_differences(ad, dtype, tolerance):
    # The implicit gradient in `dtype`; central differences of float64 solves as the reference.
    f, _, theta = _pytree_problem(ad)
    v = np.random.default_rng(3).normal(size=7)

    def solve_flat(s, m, dt=dtype):  # -> the flat x*, for a VJP with v
        x0 = {"a": ad.asarray(np.zeros(3), dt), "b": ad.asarray(np.zeros((2, 2)), dt)}
        x = api(ad).argmin(f, x0, args=({"s": s, "m": m}, 2.0), method="L-BFGS-B",
                           options={"gtol": 1e-12 if dt == "float64" else 1e-5, "ftol": 1e-16, "maxiter": 2000})
        return ad.ops.stack([*[x["a"][i] for i in range(3)], *[x["b"][i, j] for i in range(2) for j in range(2)]])

    def value(s, m):
        return float(np.dot(v, ad.to_numpy(solve_flat(ad.asarray(s), ad.asarray(m), "float64"))))

    # (Line searches near the rounding level can end "abnormally": ignored, the point is as good as it gets.)
    g_s, g_m = vjp(ad, solve_flat, v, ad.asarray(theta["s"], dtype), ad.asarray(theta["m"], dtype))
    h = 1e-4
    fd = []
    for name in ("s", "m"):
        grad = np.zeros_like(theta[name])
        for i in np.ndindex(theta[name].shape):
            plus = {k: t.copy() for k, t in theta.items()}
            minus = {k: t.copy() for k, t in theta.items()}
            plus[name][i] += h
            minus[name][i] -= h
            grad[i] = (value(plus["s"], plus["m"]) - value(minus["s"], minus["m"])) / (2 * h)
        fd.append(grad)
    assert rel(g_s, fd[0]) <= tolerance
    assert rel(g_m, fd[1]) <= tolerance


def test_gradient_error_falls_as_the_forward_tolerance_tightens(ad):
    # f = sum (x - y)^2 + 0.1 x^4, separable: x* by Newton in NumPy, dx*/dy = 2 / (2 + 1.2 x*^2).
    y_np = np.linspace(-2.0, 3.0, 8)
    x = y_np.copy()
    for _ in range(50):
        x -= (2 * (x - y_np) + 0.4 * x ** 3) / (2 + 1.2 * x ** 2)
    exact = 2 / (2 + 1.2 * x ** 2)

    def f(x, y):
        return sum_(ad, (x - y) ** 2) + 0.1 * sum_(ad, x ** 4)

    errors = []
    for gtol in (1e-2, 1e-5, 1e-10):
        def solve(y):
            return api(ad).argmin(f, ad.asarray(np.zeros(8)), args=(y,), method="L-BFGS-B",
                                  options={"gtol": gtol, "ftol": 0.0, "maxiter": 500})

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ArgminWarning)
            (J,) = jacobian(ad, solve, ad.asarray(y_np))
        errors.append(rel(np.diag(J), exact) + np.abs(J - np.diag(np.diag(J))).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= 1e-6


# ------------------------------------------------------------- the contract ----


def test_result_and_backward_counts(ad):
    y = ad.asarray(np.array([1.0, -1.0, 2.0]))

    def f(x, y):
        return sum_(ad, (x - y) ** 2) + 0.1 * sum_(ad, x ** 4)

    x, res = api(ad).argmin(f, ad.asarray(np.zeros(3)), args=(y,), return_result=True, **TIGHT)
    assert res.success and res.implicit["backward_calls"] == 0
    np.testing.assert_allclose(ad.to_numpy(x), ad.to_numpy(res.x), rtol=0, atol=0)
    (g,) = vjp(ad, lambda y: api(ad).argmin(f, ad.asarray(np.zeros(3)), args=(y,), **TIGHT),
               np.ones(3), y)
    x_np = ad.to_numpy(x)
    np.testing.assert_allclose(g, 2 / (2 + 1.2 * x_np ** 2), rtol=1e-7)  # diagonal Hessian


def test_x0_gets_no_gradient(ad):
    y = ad.asarray(np.array([0.5, 2.0]))

    def f(x, y):
        return sum_(ad, (x - y) ** 2)

    g_x0, g_y = vjp(ad, lambda x0, y: api(ad).argmin(f, x0, args=(y,), **TIGHT), np.ones(2),
                    ad.asarray(np.zeros(2)), y)
    assert g_x0 is None or not np.any(g_x0)
    np.testing.assert_allclose(g_y, np.ones(2), rtol=1e-8)


def test_forward_not_converged_warns_or_raises(ad):
    y = ad.asarray(np.array([3.0, -1.0]))

    def f(x, y):
        return sum_(ad, (x - y) ** 4) + sum_(ad, x ** 2)

    with pytest.warns(ArgminWarning, match="forward solve did not converge"):
        api(ad).argmin(f, ad.asarray(np.zeros(2)), args=(y,), options={"maxiter": 1})
    with pytest.raises(ArgminError, match="forward solve did not converge"):
        api(ad).argmin(f, ad.asarray(np.zeros(2)), args=(y,), options={"maxiter": 1}, strict=True)


def test_linear_solve_not_converged_warns_or_raises(ad):
    rng = np.random.default_rng(2)
    X = ad.asarray(rng.normal(size=(20, 10)))
    y = ad.asarray(rng.normal(size=20))

    def loss(w, X, y):
        r = matvec(ad, X, w) - y
        return 0.5 * sum_(ad, r * r) + 0.01 * sum_(ad, w ** 2)

    def solve(y, **kw):
        # A forward solve that converges everywhere (TIGHT's gtol=1e-11 ends in BFGS's
        # "precision loss" with TensorFlow's float64 sums on some CPUs): the test is the backward one.
        return api(ad).argmin(loss, ad.asarray(np.zeros(10)), args=(X, y), linear_maxiter=2,
                              options={"gtol": 1e-8, "maxiter": 2000}, **kw)

    with pytest.warns(ArgminWarning, match="backward cg solve did not converge"):
        (g,) = vjp(ad, solve, np.ones(10), y)
    assert np.all(np.isfinite(g))
    with pytest.raises(ArgminError, match="backward cg solve did not converge"):
        vjp(ad, lambda y: solve(y, strict=True), np.ones(10), y)


def test_ridge_option_for_a_singular_hessian(ad):
    # f does not depend on x[1]: H = diag(2, 0) is singular; ridge r gives u = v / (diag(H) + r).
    t = ad.asarray(np.array([1.5]))

    def f(x, t):
        return (x[0] - t[0]) ** 2 + 0.0 * x[1]

    def solve(t, **kw):
        return api(ad).argmin(f, ad.asarray(np.zeros(2)), args=(t,), **TIGHT, **kw)

    (g,) = vjp(ad, lambda t: solve(t, ridge=0.5), np.array([1.0, 1.0]), t)
    np.testing.assert_allclose(g, [2 / 2.5], rtol=1e-10)


def test_bad_arguments(ad):
    def f(x):
        return sum_(ad, x ** 2)

    x0 = ad.asarray(np.ones(2))
    with pytest.raises(TypeError, match="batches"):
        api(ad).argmin(f, x0, batches=[1, 2])
    with pytest.raises(ValueError, match="ridge"):
        api(ad).argmin(f, x0, ridge=-1.0)
    with pytest.raises(ValueError, match="linear_tol"):
        api(ad).argmin(f, x0, linear_tol=0.0)
    with pytest.raises(ValueError, match="linear_maxiter"):
        api(ad).argmin(f, x0, linear_maxiter=2.5)
    with pytest.raises(ValueError, match="active_tol"):
        api(ad).argmin(f, x0, active_tol="tight")
    with pytest.raises(TypeError, match="unknown_option"):
        api(ad).argmin(f, x0, unknown_option=1)


def test_numpy_api_has_no_argmin():
    from dict_minimize import numpy_api

    assert not hasattr(numpy_api, "argmin")


def test_jax_jit_is_a_clear_error():
    jax = pytest.importorskip("jax")
    from dict_minimize.jax_api import argmin

    def f(x, y):
        return jax.numpy.sum((x - y) ** 2)

    with pytest.raises(TypeError, match="outside jax.jit"):
        jax.jit(lambda y: argmin(f, jax.numpy.zeros(2), args=(y,)))(jax.numpy.ones(2))


def test_tf_function_is_a_clear_error():
    tf = pytest.importorskip("tensorflow")
    from dict_minimize.tensorflow_api import argmin

    def f(x, y):
        return tf.reduce_sum((x - y) ** 2)

    with pytest.raises(TypeError, match="eagerly"):
        tf.function(lambda y: argmin(f, tf.zeros(2), args=(y,)))(tf.ones(2))


def test_torch_parameters_without_requires_grad_are_constants():
    torch = pytest.importorskip("torch")
    from dict_minimize.torch_api import argmin

    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = argmin(lambda x, y: ((x - y) ** 2).sum(), torch.zeros(2, dtype=torch.float64), args=(y,))
    assert not x.requires_grad
    torch.testing.assert_close(x, y)


# ------------------------------------------------------------- the examples ----


@pytest.fixture
def examples_path():
    import sys
    from pathlib import Path

    path = str(Path(__file__).resolve().parent.parent / "examples")
    sys.path.insert(0, path)
    yield
    sys.path.remove(path)


def test_argmin_relu_example_trains_like_torch_relu(examples_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import argmin_relu

    out = argmin_relu.main(epochs=2, batch_size=128, hidden=16, verbose=False)
    ours, reference = out["argmin ReLU"], out["torch.relu"]
    assert ours["accuracy"] > 0.5  # ten classes: chance is 0.1
    assert out["max_loss_difference"] <= 1e-6  # the same function and the same gradients
    assert abs(ours["accuracy"] - reference["accuracy"]) <= 1 / 500


def test_argmin_bilevel_example_beats_one_shared_penalty(examples_path):
    pytest.importorskip("torch")
    import argmin_bilevel

    out = argmin_bilevel.main(steps=15, verbose=False)
    shared, learned = out["grid, one shared penalty (25)"], out["gradient through argmin (15 Adam steps)"]
    assert learned["val"] < shared["val"]
    assert out["curve"][-1] < out["curve"][0]


def test_implicit_benchmark_rows_are_like_for_like():
    # benchmarks/implicit.py at its smallest size: every side reaches the same
    # tolerance, and argmin's gradient matches the closed form.
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "implicit.py"
    spec = importlib.util.spec_from_file_location("dict_minimize_benchmark_implicit", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.REPEATS = 1
    row = bench.torch_rows(100)
    a, u, t = row["argmin"], row["unrolled_lbfgs"], row["torch_lbfgs"]
    assert max(a["d_lam_error"], a["d_y_error"], u["d_lam_error"], u["d_y_error"]) <= 1e-6
    assert max(a["w_error"], u["w_error"], t["w_error"]) <= 1e-6
    assert a["backward_hvps"] >= a["cg_iterations"] >= 1 and u["nit"] >= 1
    assert "| 1e+02 |" in bench.tables({"torch": [row], "jax": []})


def test_torch_backward_skips_inputs_without_requires_grad():
    # Only x0 requires grad: the backward pass has nothing to solve for.
    torch = pytest.importorskip("torch")
    from dict_minimize.torch_api import argmin

    x0 = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x, res = argmin(lambda x, y: ((x - y) ** 2).sum(), x0, args=(y,), return_result=True)
    x.sum().backward()
    assert x0.grad is None and res.implicit["backward_calls"] == 0
