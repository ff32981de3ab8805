"""Curvature by autodiff in every autodiff backend.

The backend hooks (``linearize_grad``) are checked against central
differences of the backend's own gradient; the driver's use of them
(Hessian-vector products reused across products at one point, the dense
Hessian of dogleg / trust-exact and its size guard) through ``minimize``;
and every SciPy method through a Rosenbrock split over a dict.

JAX runs these checks in float64 inside ``jax.enable_x64(True)``: the
library never changes JAX's configuration, and the context manager leaves
it as it was for the other tests.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.optimize import BFGS, SR1, HessianUpdateStrategy

from conftest import capture_scipy_call

from dict_minimize.core import driver
from dict_minimize.core.driver import build_layout

RNG_SEED = 20240607


# ---------------------------------------------------------------- helpers ----


def backend_impl(h):
    """The backend object (``_BACKEND``) behind a harness."""
    return importlib.import_module(f"dict_minimize.{h.name}_api")._BACKEND


class LinearizeSpy:
    """Wraps a backend's ``linearize_grad``: records each linearization point and counts products."""

    def __init__(self, monkeypatch, impl):
        self.points = []
        self.products = 0
        real = impl.linearize_grad

        def linearize_grad(fun, layout):
            linearize = real(fun, layout)
            if linearize is None:
                return None

            def counted_linearize(x, args):
                self.points.append(np.array(x, copy=True))
                hvp = linearize(x, args)

                def counted_hvp(p):
                    self.products += 1
                    return hvp(p)

                return counted_hvp

            return counted_linearize

        # An instance attribute shadows the method for this test only.
        monkeypatch.setattr(impl, "linearize_grad", linearize_grad)

    @property
    def distinct_points(self) -> int:
        return len({p.tobytes() for p in self.points})


def relative_error(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def gradient_jacobian_fd(value_and_grad, x, args, step=1e-5):
    """Central differences of the gradient: column ``j`` is ``(g(x + h e_j) - g(x - h e_j)) / 2h``."""
    n = x.size
    cols = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = step
        cols.append((value_and_grad(x + e, args)[1] - value_and_grad(x - e, args)[1]) / (2 * step))
    return np.stack(cols, axis=1)


def hvp_fd(value_and_grad, x, args, p, step=1e-5):
    """Central difference of the gradient along ``p`` (scaled to unit length)."""
    scale = np.linalg.norm(p)
    d = p / scale
    forward, backward = value_and_grad(x + step * d, args)[1], value_and_grad(x - step * d, args)[1]
    return scale * (forward - backward) / (2 * step)


# ---------------------------------------------------- a coupled objective ----


def coupled_objective(ops):
    """Non-quadratic, couples every leaf; ``x = {'v': (3,), 'block': {'m': (2, 3), 's': ()}}``."""

    def fun(x, scale):
        v, m, s = x["v"], x["block"]["m"], x["block"]["s"]
        return (
            ops.sum(ops.exp(0.3 * v)) * (1.0 + s**2)
            + scale * ops.sum(ops.sin(m) * ops.tanh(v))
            + 0.25 * s * ops.sum(m**3)
            + ops.log(1.0 + ops.sum(m**2) * ops.sum(v**2))
        )

    return fun


def coupled_x0(h):
    rng = np.random.default_rng(RNG_SEED)
    return {
        "v": h.asarray(rng.uniform(-1, 1, 3)),
        "block": {"m": h.asarray(rng.uniform(-1, 1, (2, 3))), "s": h.asarray(0.3)},
    }


def flat_coupled(h, x) -> np.ndarray:
    """The flat vector in the documented order: leaves in insertion order, C order."""
    return np.concatenate([h.to_numpy(x["v"]).ravel(), h.to_numpy(x["block"]["m"]).ravel(),
                           h.to_numpy(x["block"]["s"]).ravel()]).astype(np.float64)


# ------------------------------------------------------------- HVP hooks ----


def test_hvps_match_finite_differences_of_the_gradient(ad):
    impl = backend_impl(ad)
    fun = coupled_objective(ad.ops)
    x0 = coupled_x0(ad)
    layout, _ = build_layout(impl, x0)
    assert layout.n == 10
    args = (0.7,)
    value_and_grad = impl.value_and_grad(fun, layout)
    linearize = impl.linearize_grad(fun, layout)
    rng = np.random.default_rng(RNG_SEED + 1)

    for x in (flat_coupled(ad, x0), rng.uniform(-1, 1, layout.n)):
        x_before = x.copy()
        hvp = linearize(x, args)
        # Several products from one linearization: the reused graph must stay valid.
        eye = np.eye(layout.n)
        directions = [eye[0], eye[-1]] + [rng.normal(size=layout.n) for _ in range(3)]
        for p in directions:
            p_before = p.copy()
            got = hvp(p)
            assert got.shape == (layout.n,) and got.dtype == np.float64
            assert relative_error(got, hvp_fd(value_and_grad, x, args, p)) < 1e-6
            np.testing.assert_array_equal(p, p_before)  # never written into
        np.testing.assert_array_equal(x, x_before)
        # Linear in p, and the same product twice gives the same answer.
        p, q = directions[2], directions[3]
        np.testing.assert_allclose(hvp(2.0 * p - q), 2.0 * hvp(p) - hvp(q), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(hvp(p), hvp(p))


def test_hvp_sees_the_args(ad):
    impl = backend_impl(ad)
    fun = coupled_objective(ad.ops)
    layout, _ = build_layout(impl, coupled_x0(ad))
    x = flat_coupled(ad, coupled_x0(ad))
    p = np.random.default_rng(RNG_SEED + 2).normal(size=layout.n)
    linearize = impl.linearize_grad(fun, layout)
    value_and_grad = impl.value_and_grad(fun, layout)
    small, large = linearize(x, (0.1,))(p), linearize(x, (3.0,))(p)
    assert relative_error(large, hvp_fd(value_and_grad, x, (3.0,), p)) < 1e-6
    assert relative_error(small, large) > 1e-3


@pytest.mark.parametrize("method", ["trust-exact", "dogleg"])
def test_dense_hessian_from_the_driver_matches_finite_differences(ad, method, monkeypatch):
    impl = backend_impl(ad)
    fun = coupled_objective(ad.ops)
    x0 = coupled_x0(ad)
    seen = capture_scipy_call(monkeypatch)
    ad.minimize(fun, x0, args=(0.7,), method=method)
    assert callable(seen["hess"]) and seen["hessp"] is None

    layout, _ = build_layout(impl, x0)
    x = flat_coupled(ad, x0)
    np.testing.assert_array_equal(seen["x0"], x)
    dense = seen["hess"](x)
    assert dense.shape == (layout.n, layout.n)
    np.testing.assert_array_equal(dense, dense.T)
    want = gradient_jacobian_fd(impl.value_and_grad(fun, layout), x, (0.7,))
    assert relative_error(dense, want) < 1e-6
    # Another point: the Hessian is rebuilt there, not served from a stale memo.
    y = x + 0.25
    want = gradient_jacobian_fd(impl.value_and_grad(fun, layout), y, (0.7,))
    assert relative_error(seen["hess"](y), want) < 1e-6


# ---------------------------------------------------------- HVP reuse ----


def extended_rosenbrock(ops):
    """``sum 100 (b - a^2)^2 + (1 - a)^2`` with ``a``, ``b`` in two leaves of different shapes."""

    def fun(x):
        a, b = x["a"], ops.reshape(x["b"], (-1,))
        return ops.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2)

    return fun


def test_newton_cg_reuses_one_linearization_per_iterate(ad, monkeypatch):
    k = 6
    # Different starting values per pair: the Hessian has many distinct
    # eigenvalues, so CG takes several products per Newton step.
    a0, b0 = np.linspace(-1.2, 0.6, k), np.linspace(1.0, -0.5, k)
    x0 = {"a": ad.asarray(a0), "b": ad.asarray(b0.reshape(k, 1))}
    user = extended_rosenbrock(ad.ops)
    calls = {"curvature": 0, "all": 0}
    in_curvature = [False]

    def counted_fun(x):
        calls["all"] += 1
        calls["curvature"] += in_curvature[0]
        return user(x)

    impl = backend_impl(ad)
    spy = LinearizeSpy(monkeypatch, impl)
    real_linearize_grad = impl.linearize_grad

    def flagged_linearize_grad(fun, layout):
        # Marks the user-fun calls made while linearizing or taking products.
        linearize = real_linearize_grad(fun, layout)

        def flagged(x, args):
            in_curvature[0] = True
            try:
                hvp = linearize(x, args)
            finally:
                in_curvature[0] = False

            def flagged_hvp(p):
                in_curvature[0] = True
                try:
                    return hvp(p)
                finally:
                    in_curvature[0] = False

            return flagged_hvp

        return flagged

    monkeypatch.setattr(impl, "linearize_grad", flagged_linearize_grad)
    iterates = [np.r_[a0, b0]]

    def record(xk):
        iterates.append(np.r_[ad.to_numpy(xk["a"]).ravel(), ad.to_numpy(xk["b"]).ravel()])

    res = ad.minimize(counted_fun, x0, method="Newton-CG", callback=record, options={"xtol": 1e-10})

    assert res.success, res.message
    np.testing.assert_allclose(ad.to_numpy(res.x["a"]), np.ones(k), atol=1e-6)
    assert spy.products == res.nhev  # every product SciPy asked for went through the hook
    # One linearization per iterate, in order (x0, x1, ...; the last iterate
    # needs none), never two at one point, and several products from each.
    assert len(spy.points) == spy.distinct_points == res.nit
    assert [p.tobytes() for p in spy.points] == [x.tobytes() for x in iterates[:-1]]
    assert res.nhev >= 2 * len(spy.points)
    # The user's function runs at most once per linearization, never per product
    # (a traced backend may run it once more, to trace).
    assert calls["curvature"] <= len(spy.points) + 1
    if ad.name == "torch":  # eager: exactly one forward pass per linearization
        assert calls["curvature"] == len(spy.points)


# ------------------------------------------------ every SciPy method ----


def split_rosenbrock(ops):
    """Rosenbrock in 2-d with ``x`` a 0-d leaf and ``y`` a (1, 1) leaf; ``steep`` is 100 classically."""

    def fun(z, steep):
        x, y = z["x"], z["y"][0, 0]
        return steep * (y - x**2) ** 2 + (1.0 - x) ** 2

    return fun


def rosenbrock_x0(h):
    return {"x": h.asarray(-1.2), "y": h.asarray([[1.0]])}


# method -> (keyword arguments, steepness, tolerance on the distance to (1, 1)).
# COBYLA gets a gentler valley: SciPy's PRIMA COBYLA needs tens of thousands of
# evaluations (minutes) to follow the classic one, and still ~1000 here.
METHOD_SETTINGS = {
    "BFGS": (dict(options={"gtol": 1e-10}), 100.0, 1e-6),
    "L-BFGS-B": (dict(options={"gtol": 1e-12, "ftol": 1e-15}), 100.0, 1e-5),
    "CG": (dict(options={"gtol": 1e-10}), 100.0, 1e-6),
    "Newton-CG": (dict(options={"xtol": 1e-12}), 100.0, 1e-6),
    "trust-ncg": (dict(options={"gtol": 1e-10}), 100.0, 1e-6),
    "trust-krylov": (dict(options={"gtol": 1e-8}), 100.0, 1e-6),
    "trust-exact": (dict(options={"gtol": 1e-10}), 100.0, 1e-6),
    "dogleg": (dict(options={"gtol": 1e-10}), 100.0, 1e-6),
    "trust-constr": (dict(options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 2000}), 100.0, 1e-6),
    "SLSQP": (dict(options={"ftol": 1e-14, "maxiter": 1000}), 100.0, 1e-4),
    "TNC": (dict(options={"gtol": 1e-12, "xtol": 1e-12, "ftol": 1e-16, "maxfun": 5000}), 100.0, 1e-5),
    "Nelder-Mead": (dict(options={"xatol": 1e-9, "fatol": 1e-14, "maxiter": 5000}), 100.0, 1e-6),
    "Powell": (dict(options={"maxiter": 5000}), 100.0, 1e-6),
    "COBYLA": (dict(tol=1e-6, options={"maxiter": 5000}), 10.0, 1e-3),
    "COBYQA": (dict(options={"final_tr_radius": 1e-10, "maxiter": 5000}), 100.0, 1e-6),
}
CURVATURE_METHODS = {"Newton-CG", "trust-ncg", "trust-krylov", "trust-exact", "dogleg", "trust-constr"}
GRADIENT_FREE = {"Nelder-Mead", "Powell", "COBYLA", "COBYQA"}


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "COBYLA" else m for m in METHOD_SETTINGS]
)
def test_every_method_converges_without_user_derivatives(ad, method, monkeypatch):
    kwargs, steep, atol = METHOD_SETTINGS[method]
    spy = LinearizeSpy(monkeypatch, backend_impl(ad))
    x0 = rosenbrock_x0(ad)
    res = ad.minimize(split_rosenbrock(ad.ops), x0, args=(steep,), method=method, **kwargs)

    assert res.success, res.message
    assert ad.is_native(res.x["x"]) and tuple(res.x["y"].shape) == (1, 1)
    assert ad.dtype_name(res.x["y"]) == "float64"
    got = np.r_[ad.to_numpy(res.x["x"]).ravel(), ad.to_numpy(res.x["y"]).ravel()]
    np.testing.assert_allclose(got, [1.0, 1.0], atol=atol, rtol=0)
    np.testing.assert_allclose(ad.to_numpy(x0["x"]), -1.2)  # x0 untouched
    if method in CURVATURE_METHODS:  # curvature came from autodiff, not SciPy's differences
        assert spy.products > 0
    else:
        assert spy.products == 0
    if method not in GRADIENT_FREE and "jac" in res and method != "trust-constr":
        assert set(res.jac) == {"x", "y"}
        assert np.abs(ad.to_numpy(res.jac["y"])).max() < 1e-3


# -------------------------------------------- user curvature callables ----


def rosenbrock_hessian_parts(z, steep):
    x, y = z["x"], z["y"][0, 0]
    return 12.0 * steep * x**2 - 4.0 * steep * y + 2.0, -4.0 * steep * x, 2.0 * steep


def test_user_hessp_takes_and_returns_pytrees(ad, monkeypatch):
    spy = LinearizeSpy(monkeypatch, backend_impl(ad))
    seen = []

    def hessp(z, p, steep):
        seen.append((type(p), set(p), tuple(p["y"].shape)))
        hxx, hxy, hyy = rosenbrock_hessian_parts(z, steep)
        px, py = p["x"], p["y"][0, 0]
        return {"x": hxx * px + hxy * py, "y": ad.ops.reshape(hxy * px + hyy * py, (1, 1))}

    for method in ("Newton-CG", "trust-krylov"):
        seen.clear()
        res = ad.minimize(split_rosenbrock(ad.ops), rosenbrock_x0(ad), args=(100.0,), method=method,
                          hessp=hessp, options={"gtol": 1e-8} if method != "Newton-CG" else {"xtol": 1e-12})
        assert res.success, res.message
        np.testing.assert_allclose(ad.to_numpy(res.x["x"]), 1.0, atol=1e-6)
        # SciPy's trust-region count can be one off the calls it makes.
        assert res.nhev > 0 and abs(len(seen) - res.nhev) <= 1
        assert seen[0] == (dict, {"x", "y"}, (1, 1))
    assert spy.products == 0  # the user's products were used, not autodiff


def test_user_dense_hess_over_the_flat_vector(ad, monkeypatch):
    spy = LinearizeSpy(monkeypatch, backend_impl(ad))
    calls = [0]

    def hess(z, steep):
        calls[0] += 1
        hxx, hxy, hyy = rosenbrock_hessian_parts(z, steep)
        stack = ad.ops.stack
        # Flat order: z['x'] first, then z['y']; a native (2, 2) tensor.
        return stack([stack([hxx, hxy]), stack([hxy, ad.ops.reshape(ad.asarray(hyy), ())])])

    for method in ("trust-exact", "dogleg", "Newton-CG"):
        calls[0] = 0
        res = ad.minimize(split_rosenbrock(ad.ops), rosenbrock_x0(ad), args=(100.0,), method=method,
                          hess=hess, options={"gtol": 1e-10} if method != "Newton-CG" else {"xtol": 1e-12})
        assert res.success, (method, res.message)
        np.testing.assert_allclose(ad.to_numpy(res.x["y"]), [[1.0]], atol=1e-6)
        assert res.nhev > 0 and abs(calls[0] - res.nhev) <= 1
    assert spy.products == 0


@pytest.mark.parametrize("strategy", [BFGS, SR1])
def test_hessian_update_strategy_passes_through(ad, strategy, monkeypatch):
    spy = LinearizeSpy(monkeypatch, backend_impl(ad))
    given = strategy()
    real = driver.scipy_minimize
    handed = {}

    def pass_on(*a, **k):
        handed["hess"] = k["hess"]
        return real(*a, **k)

    monkeypatch.setattr(driver, "scipy_minimize", pass_on)
    res = ad.minimize(split_rosenbrock(ad.ops), rosenbrock_x0(ad), args=(100.0,), method="trust-constr",
                      hess=given, options={"gtol": 1e-10, "xtol": 1e-14, "maxiter": 3000})
    assert handed["hess"] is given and isinstance(given, HessianUpdateStrategy)
    assert res.success, res.message
    np.testing.assert_allclose(ad.to_numpy(res.x["x"]), 1.0, atol=1e-5)
    assert spy.products == 0  # the strategy, not autodiff, supplied the curvature


# ------------------------------------------------- dense Hessian guard ----


def six_parameters(h):
    return {"u": h.asarray(np.linspace(-1, 1, 3)), "w": h.asarray(np.full((1, 3), 0.5))}


def convex_quartic(ops):
    def fun(x):
        return ops.sum(x["u"] ** 4 + x["u"] ** 2) + ops.sum((x["w"] - 1.0) ** 2)

    return fun


@pytest.mark.parametrize("method", ["dogleg", "trust-exact"])
def test_dense_hessian_over_budget_is_a_clear_error(ad, method, monkeypatch):
    n = 6
    monkeypatch.setattr(driver, "DENSE_HESSIAN_MAX_BYTES", n * n * 8 - 1)
    calls = [0]
    fun = convex_quartic(ad.ops)

    def counted(x):
        calls[0] += 1
        return fun(x)

    with pytest.raises(ValueError, match=method) as err:
        ad.minimize(counted, six_parameters(ad), method=method)
    for hessp_method in ("trust-krylov", "trust-ncg", "Newton-CG", "trust-constr"):
        assert hessp_method in str(err.value)
    assert f"{n} x {n}" in str(err.value)
    assert calls[0] == 0  # refused before any evaluation

    # At exactly the budget it runs; a user hess is never refused.
    monkeypatch.setattr(driver, "DENSE_HESSIAN_MAX_BYTES", n * n * 8)
    assert ad.minimize(fun, six_parameters(ad), method=method).success
    monkeypatch.setattr(driver, "DENSE_HESSIAN_MAX_BYTES", 1)
    res = ad.minimize(fun, six_parameters(ad), method=method,
                      hess=lambda x: np.diag(np.r_[12 * ad.to_numpy(x["u"]) ** 2 + 2, np.full(3, 2.0)]))
    assert res.success, res.message
    np.testing.assert_allclose(ad.to_numpy(res.x["w"]), np.ones((1, 3)), atol=1e-6)


def test_hessp_methods_ignore_the_dense_budget(ad, monkeypatch):
    monkeypatch.setattr(driver, "DENSE_HESSIAN_MAX_BYTES", 1)
    spy = LinearizeSpy(monkeypatch, backend_impl(ad))
    res = ad.minimize(convex_quartic(ad.ops), six_parameters(ad), method="trust-krylov")
    assert res.success, res.message
    np.testing.assert_allclose(ad.to_numpy(res.x["u"]), np.zeros(3), atol=1e-6)
    assert spy.products > 0
