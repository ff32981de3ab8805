"""Curvature by autodiff: what it buys against SciPy's finite differences, and what it costs.

Three sections, each printed as a Markdown table:

``fd``
    The same problems solved with autodiff derivatives (``torch_api``) and
    with SciPy's finite-difference defaults: trust-constr with autodiff
    (gradient, Hessian-vector products, constraint Jacobians and Hessians)
    against ``jac='2-point'`` and against plain SciPy (``numpy_api``:
    finite differences and BFGS everywhere); Newton-CG with autodiff
    Hessian-vector products against Newton-CG given only the gradient
    (SciPy then differences the gradient for each product); SLSQP with
    autodiff constraint Jacobians against finite differences (``numpy_api``).
    "user calls" counts the calls of the objective / constraint functions:
    the real cost of finite differences, which SciPy's ``nfev`` counts only
    in part.
``logreg``
    Newton-CG and trust-krylov on autodiff Hessian-vector products against
    L-BFGS-B on an L2-regularized multinomial logistic regression with
    ~1e5 parameters (synthetic data, fixed seed), in every installed
    framework (float64).
``hvp``
    Hessian-vector products per second of the backends' ``linearize_grad``
    (PyTorch: one gradient graph per point, reused by every product; JAX:
    ``jax.linearize`` of the gradient, reused) against a naive product that
    starts from scratch each time (PyTorch: forward + backward with
    ``create_graph`` + double backward, and ``torch.func.jvp`` of
    ``torch.func.grad``; JAX: ``jax.jit`` of ``jax.jvp`` of ``jax.grad``;
    TensorFlow, whose backend runs a compiled forward-over-reverse pass per
    product: a ``tf.function`` of nested ``GradientTape``) at n ~ 1e4 and ~ 1e5.

Every framework runs in its own worker process, with its thread pools
capped (``--threads``, default 1): on a small shared machine more threads
than free cores make timings erratic (PyTorch's 2 threads ran 20x slower
than 1 here under load).

Usage::

    python benchmarks/curvature.py                  # all sections, Markdown on stdout
    python benchmarks/curvature.py --quick          # small sizes: a smoke run
    python benchmarks/curvature.py --sections hvp --frameworks torch
    python benchmarks/curvature.py --json raw.json  # also the raw data
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import interleaved, machine, markdown_table, timed  # noqa: E402

SECTIONS = ("fd", "logreg", "hvp")
FRAMEWORKS = ("torch", "jax", "tensorflow")
#: Which frameworks each section runs in (fd compares torch_api with numpy_api).
SECTION_FRAMEWORKS = {"fd": ("torch",), "logreg": FRAMEWORKS, "hvp": FRAMEWORKS}
SEED = 20240607

FD_SIZES = {"full": {"trust-constr": 50, "newton-cg": 200, "slsqp": (100, 10)},
            "quick": {"trust-constr": 6, "newton-cg": 20, "slsqp": (20, 2)}}
#: (samples, features, classes): parameters = features * classes + classes.
LOGREG_SIZES = {"full": [(2000, 500, 200)], "quick": [(200, 20, 5)]}
LOGREG_L2 = {"full": (1e-3, 1e-5), "quick": (1e-3,)}
HVP_SIZES = {"full": [(2000, 100, 100), (2000, 500, 200)], "quick": [(100, 10, 10)]}
HVP_PRODUCTS = {"full": 30, "quick": 5}


# ---------------------------------------------------------------------------
# Framework namespaces: the same problem written once for NumPy and PyTorch
# ---------------------------------------------------------------------------


def numpy_ops() -> SimpleNamespace:
    """NumPy's functions under the names the problems use.

    Examples
    --------
    >>> ops = numpy_ops()
    >>> float(ops.sum(ops.cat([ops.asarray([1.0]), ops.asarray([2.0])])))
    3.0
    """
    from dict_minimize import numpy_api

    return SimpleNamespace(
        name="numpy", minimize=numpy_api.minimize, asarray=lambda a: np.array(a, dtype=np.float64),
        to_numpy=np.asarray, cat=np.concatenate, sum=np.sum, reshape=np.reshape, cos=np.cos,
    )


def torch_ops() -> SimpleNamespace:
    """PyTorch's functions under the names the problems use (float64 tensors)."""
    import torch

    from dict_minimize import torch_api

    return SimpleNamespace(
        name="torch", minimize=torch_api.minimize,
        asarray=lambda a: torch.tensor(np.asarray(a, dtype=np.float64)),
        to_numpy=lambda t: t.detach().cpu().numpy(), cat=torch.cat, sum=torch.sum,
        reshape=torch.reshape, cos=torch.cos,
    )


class Counted:
    """A function that counts its calls (reset by the run that uses it)."""

    def __init__(self, fun: Callable):
        self.fun = fun
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.fun(*args)


# ---------------------------------------------------------------------------
# Section fd: autodiff against finite differences
# ---------------------------------------------------------------------------


def chained_rosenbrock(ops, n: int):
    """Chained Rosenbrock over ``{'head': (n//2,), 'tail': (n - n//2,)}``; minimum at all ones."""

    def fun(x):
        z = ops.cat([x["head"], x["tail"]])
        return ops.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)

    start = np.where(np.arange(n) % 2 == 0, -1.2, 1.0)
    x0 = {"head": ops.asarray(start[: n // 2]), "tail": ops.asarray(start[n // 2:])}
    return fun, x0


def ball_least_squares(ops, n: int):
    """min 1/2 ||A z - b||^2 + 1/4 sum(z^4) s.t. ||z||^2 <= 1/2, sum(z) = 1; strictly convex: one answer.

    ``z`` is ``{'head': (n//2,), 'tail': (n - n//2,)}`` concatenated; ``A`` is (2n, n), random (fixed seed).
    """
    from scipy.optimize import NonlinearConstraint

    rng = np.random.default_rng(SEED)
    A, b = ops.asarray(rng.normal(size=(2 * n, n)) / np.sqrt(n)), ops.asarray(rng.normal(size=2 * n))

    def fun(x):
        z = ops.cat([x["head"], x["tail"]])
        return 0.5 * ops.sum((A @ z - b) ** 2) + 0.25 * ops.sum(z**4)

    ball = Counted(lambda x: ops.sum(x["head"] ** 2) + ops.sum(x["tail"] ** 2))
    total = Counted(lambda x: ops.sum(x["head"]) + ops.sum(x["tail"]) - 1.0)
    constraints = [NonlinearConstraint(ball, -np.inf, 0.5), NonlinearConstraint(total, 0.0, 0.0)]
    x0 = {"head": ops.asarray(np.full(n // 2, 1.0 / n)), "tail": ops.asarray(np.full(n - n // 2, 1.0 / n))}

    def violation(x):
        z = np.r_[ops.to_numpy(x["head"]), ops.to_numpy(x["tail"])]
        return max(float(z @ z - 0.5), abs(float(z.sum() - 1.0)), 0.0)

    return fun, x0, constraints, [ball, total], violation


def blocks_problem(ops, n: int, m: int):
    """min ||z - 1/2||^2 + sum(z^4)/4 s.t. ||block_j||^2 <= 1 (m blocks, one (m,) constraint), sum(z) = n/5.

    ``z`` is ``{'u': (n//2,), 'v': (5, n//10)}`` raveled; every block constraint is active.
    """
    from scipy.optimize import NonlinearConstraint

    rng = np.random.default_rng(SEED)
    x0 = {"u": ops.asarray(rng.uniform(-0.1, 0.1, n // 2)),
          "v": ops.asarray(rng.uniform(-0.1, 0.1, (5, n // 10)))}

    def flat(x):
        return ops.cat([x["u"], ops.reshape(x["v"], (-1,))])

    def fun(x):
        z = flat(x)
        return ops.sum((z - 0.5) ** 2) + 0.25 * ops.sum(z**4)

    blocks = Counted(lambda x: ops.sum(ops.reshape(flat(x), (m, -1)) ** 2, axis=1))
    total = Counted(lambda x: ops.sum(flat(x)) - n / 5)
    constraints = [NonlinearConstraint(blocks, -np.inf, 1.0), {"type": "eq", "fun": total}]

    def violation(x):
        z = np.r_[ops.to_numpy(x["u"]), ops.to_numpy(x["v"]).ravel()]
        return max(float(np.max((z.reshape(m, -1) ** 2).sum(1) - 1.0)), abs(float(z.sum() - n / 5)), 0.0)

    return fun, x0, constraints, [blocks, total], violation


def jac_true(fun):
    """``fun`` returning ``(value, gradient)`` by autograd: a gradient-only user (no autodiff curvature)."""
    import torch

    def value_and_grad(x):
        value = fun(x)
        grads = torch.autograd.grad(value, list(x.values()))
        return value, dict(zip(x, grads))

    return value_and_grad


def fd_cases(quick: bool) -> list[dict]:
    """(problem, method, variant, how to run it) for section fd."""
    sizes = FD_SIZES["quick" if quick else "full"]
    np_ops, t_ops = numpy_ops(), torch_ops()
    cases = []

    n = sizes["trust-constr"]
    options = {"gtol": 1e-8, "xtol": 1e-12, "barrier_tol": 1e-10, "maxiter": 3000}
    for label, ops, extra in (
        ("autodiff: gradient, HVPs, constraint Jacobian + Hessian (torch_api)", t_ops, {}),
        ("jac='2-point' + BFGS; constraint by autodiff (torch_api)", t_ops, {"jac": "2-point"}),
        ("SciPy defaults: differences + BFGS everywhere (numpy_api)", np_ops, {}),
    ):
        cases.append(dict(problem=f"least squares + quartic in a ball, n={n}", method="trust-constr",
                          variant=label, build=lambda ops=ops: ball_least_squares(ops, n), ops=ops,
                          kwargs=dict(method="trust-constr", options=options, **extra)))

    n = sizes["newton-cg"]
    for label, wrap in (("autodiff HVPs (torch_api)", None),
                        ("gradient only (jac=True): SciPy differences the gradient", jac_true)):
        def build(wrap=wrap):
            fun, x0 = chained_rosenbrock(t_ops, n)
            return (wrap(fun) if wrap else fun), x0, [], [], None

        cases.append(dict(problem=f"chained Rosenbrock, n={n}", method="Newton-CG", variant=label,
                          build=build,
                          ops=t_ops, kwargs=dict(method="Newton-CG", jac=True if wrap else None,
                                                 options={"xtol": 1e-10, "maxiter": 5000})))

    n, m = sizes["slsqp"]
    for label, ops in (("autodiff gradient + constraint Jacobians (torch_api)", t_ops),
                       ("SciPy defaults: finite differences (numpy_api)", np_ops)):
        cases.append(dict(problem=f"{m} ball constraints + 1 equality, n={n}", method="SLSQP", variant=label,
                          build=lambda ops=ops: blocks_problem(ops, n, m), ops=ops,
                          kwargs=dict(method="SLSQP", options={"ftol": 1e-10, "maxiter": 1000})))
    return cases


def run_fd(quick: bool, repeats: int) -> list[dict]:
    """Section fd: every case timed ``repeats`` times after a warm-up run."""
    rows = []
    for case in fd_cases(quick):
        print(f"  fd: {case['method']} / {case['variant']}", file=sys.stderr, flush=True)
        fun, x0, constraints, counted_constraints, violation = case["build"]()
        objective = Counted(fun)

        def run():
            objective.calls = 0
            for c in counted_constraints:
                c.calls = 0
            res = case["ops"].minimize(objective, x0, constraints=constraints, **case["kwargs"])
            return res, objective.calls, sum(c.calls for c in counted_constraints)

        timings = interleaved({"run": run}, repeats)["run"]
        res, obj_calls, con_calls = timings[-1][2]
        rows.append({
            "problem": case["problem"], "method": case["method"], "variant": case["variant"],
            "success": bool(res.success), "message": str(res.message), "nit": int(res.get("nit", 0) or 0),
            "nfev": int(res.nfev),
            "njev": int(res.get("njev", 0) or 0), "nhev": int(res.get("nhev", 0) or 0),
            "objective_calls": obj_calls, "constraint_calls": con_calls, "fun": float(res.fun),
            "violation": violation(res.x) if violation else None,
            "wall_s": statistics.median(t[0] for t in timings[1:]),
            "cpu_s": statistics.median(t[1] for t in timings[1:]),
        })
    return rows


# ---------------------------------------------------------------------------
# Section logreg: Newton-type methods at 1e5 parameters
# ---------------------------------------------------------------------------


def logreg_data(samples: int, features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and one-hot labels from a noisy linear teacher (fixed seed).

    Examples
    --------
    >>> X, Y = logreg_data(10, 3, 4)
    >>> X.shape, Y.shape, Y.sum(axis=1).tolist() == [1.0] * 10
    ((10, 3), (10, 4), True)
    """
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(samples, features))
    teacher = 3.0 * rng.normal(size=(features, classes)) / np.sqrt(features)
    labels = np.argmax(X @ teacher + rng.gumbel(size=(samples, classes)), axis=1)
    return X, np.eye(classes)[labels]


def logreg_problem(framework: str, X: np.ndarray, Y: np.ndarray, l2: float):
    """``(minimize, loss, x0, args, to_numpy)``: mean cross-entropy + l2/2 ||W||^2 in ``framework``."""
    features, classes = X.shape[1], Y.shape[1]
    if framework == "torch":
        import torch

        from dict_minimize.torch_api import minimize

        def loss(p, X, Y):
            Z = X @ p["W"] + p["b"]
            return (torch.logsumexp(Z, 1) - (Y * Z).sum(1)).mean() + 0.5 * l2 * (p["W"] ** 2).sum()

        asarray, to_numpy = torch.from_numpy, lambda t: t.detach().numpy()
    elif framework == "jax":
        import jax
        import jax.numpy as jnp

        from dict_minimize.jax_api import minimize

        def loss(p, X, Y):
            Z = X @ p["W"] + p["b"]
            cross_entropy = jnp.mean(jax.nn.logsumexp(Z, axis=1) - jnp.sum(Y * Z, axis=1))
            return cross_entropy + 0.5 * l2 * jnp.sum(p["W"] ** 2)

        asarray, to_numpy = jnp.asarray, np.asarray
    else:
        import tensorflow as tf

        from dict_minimize.tensorflow_api import minimize

        def loss(p, X, Y):
            Z = X @ p["W"] + p["b"]
            return (tf.reduce_mean(tf.reduce_logsumexp(Z, axis=1) - tf.reduce_sum(Y * Z, axis=1))
                    + 0.5 * l2 * tf.reduce_sum(p["W"] ** 2))

        asarray, to_numpy = tf.constant, lambda t: t.numpy()
    x0 = {"W": asarray(np.zeros((features, classes))), "b": asarray(np.zeros(classes))}
    return minimize, loss, x0, (asarray(X), asarray(Y)), to_numpy


LOGREG_METHODS = {
    # Each to a gradient of ~1e-7 (L-BFGS-B: projected, inf-norm; trust-krylov:
    # 2-norm, where 1e-7 ends in SciPy's "bad approximation" at the rounding
    # level; Newton-CG stops on the step size instead).
    "L-BFGS-B": {"gtol": 1e-7, "ftol": 0.0, "maxiter": 20000, "maxfun": 20000},
    "Newton-CG": {"xtol": 1e-7, "maxiter": 1000},
    "trust-krylov": {"gtol": 1e-6, "maxiter": 1000},
}
#: Seconds after which a logreg run stops with its best point (the library's max_time=).
LOGREG_MAX_TIME = 600.0


def run_logreg(framework: str, quick: bool) -> list[dict]:
    """Section logreg in ``framework``: one timed run per method and problem."""
    rows = []
    mode = "quick" if quick else "full"
    for samples, features, classes in LOGREG_SIZES[mode]:
        X, Y = logreg_data(samples, features, classes)
        for l2 in LOGREG_L2[mode]:
            minimize, loss, x0, args, to_numpy = logreg_problem(framework, X, Y, l2)
            for method, options in LOGREG_METHODS.items():
                print(f"  logreg: {framework} {method} l2={l2}", file=sys.stderr, flush=True)
                # Two one-iteration runs first: imports, allocator, and JAX's and TensorFlow's tracing
                # and compilation. Whether the timed run pays the compilation again depends on the
                # backend's reuse rule: a second call as slow as the first says it does.
                def one_iteration():
                    return minimize(loss, x0, args=args, method=method, options={**options, "maxiter": 1})

                first_call_s, _, _ = timed(one_iteration)
                second_call_s, _, _ = timed(one_iteration)
                wall, cpu, res = timed(lambda: minimize(loss, x0, args=args, method=method, options=options,
                                                        max_time=LOGREG_MAX_TIME))
                grad = np.concatenate([to_numpy(res.jac[k]).ravel() for k in ("W", "b")])
                rows.append({
                    "framework": framework, "n": features * classes + classes, "samples": samples, "l2": l2,
                    "method": method, "success": bool(res.success), "message": str(res.message),
                    "fun": float(res.fun),
                    "grad_inf": float(np.abs(grad).max()), "nit": int(res.nit), "nfev": int(res.nfev),
                    "njev": int(res.get("njev", 0) or 0), "nhev": int(res.get("nhev", 0) or 0),
                    "wall_s": wall, "cpu_s": cpu,
                    "first_call_s": first_call_s, "second_call_s": second_call_s,
                })
    return rows


# ---------------------------------------------------------------------------
# Section hvp: reused linearization against per-product HVPs
# ---------------------------------------------------------------------------


def products_per_second(hvp: Callable[[np.ndarray], np.ndarray], directions: list[np.ndarray]) -> float:
    """Products per second of ``hvp`` over ``directions`` (after one untimed product)."""
    hvp(directions[0])
    wall, _, _ = timed(lambda: [hvp(p) for p in directions])
    return len(directions) / wall


def reused_products(linearize: Callable, x: np.ndarray, args: tuple,
                    directions: list[np.ndarray]) -> tuple[float, float, Callable]:
    """(linearization seconds, products per second, hvp) of a backend's ``linearize_grad`` at ``x``.

    The linearization is timed together with its first product, less one
    product's time: JAX dispatches asynchronously, so its work lands there.
    """
    linearize(x, args)(directions[0])  # trace / compile
    first, _, hvp = timed(lambda: _first_product(linearize, x, args, directions[0]))
    rate = products_per_second(hvp, directions)
    return max(first - 1.0 / rate, 0.0), rate, hvp


def _first_product(linearize, x, args, p):
    hvp = linearize(x, args)
    hvp(p)
    return hvp


def hvp_torch(X: np.ndarray, Y: np.ndarray, x0: dict, args: tuple, loss: Callable, directions) -> list[dict]:
    import torch

    from dict_minimize.core.driver import build_layout
    from dict_minimize.torch_api import _BACKEND

    layout, leaves = build_layout(_BACKEND, x0)
    x = _BACKEND.to_flat(leaves, layout)
    out = []

    setup, reused, hvp = reused_products(_BACKEND.linearize_grad(loss, layout), x, args, directions)
    out.append(("torch_api linearize_grad: one graph per point, reused", setup, reused))

    def unflatten(buf):
        return layout.unflatten([v.view(s) for v, s in zip(torch.split(buf, layout.sizes), layout.shapes)])

    def double_backward(p):  # what a user without the reuse writes: all of it per product
        buf = torch.from_numpy(x.copy()).requires_grad_()
        (g,) = torch.autograd.grad(loss(unflatten(buf), *args), buf, create_graph=True)
        (hv,) = torch.autograd.grad(g, buf, grad_outputs=torch.from_numpy(p))
        return hv.numpy()

    out.append(("fresh forward + backward + double backward per product", None,
                products_per_second(double_backward, directions)))

    flat_loss = torch.func.grad(lambda buf: loss(unflatten(buf), *args))
    x_t = torch.from_numpy(x.copy())

    def func_jvp(p):
        return torch.func.jvp(flat_loss, (x_t,), (torch.from_numpy(p),))[1].numpy()

    out.append(("torch.func.jvp(torch.func.grad(f)) per product", None,
                products_per_second(func_jvp, directions)))
    # The reused graph must give the naive products.
    np.testing.assert_allclose(hvp(directions[1]), double_backward(directions[1]), rtol=1e-8, atol=1e-12)
    return out


def hvp_jax(X, Y, x0, args, loss, directions) -> list[dict]:
    import jax

    from dict_minimize.core.driver import build_layout
    from dict_minimize.jax_api import _BACKEND

    layout, leaves = build_layout(_BACKEND, x0)
    x = _BACKEND.to_flat(leaves, layout)
    setup, rate, hvp = reused_products(_BACKEND.linearize_grad(loss, layout), x, args, directions)
    out = [("jax_api linearize_grad: jax.linearize of the gradient, reused", setup, rate)]

    W_shape, b_size = x0["W"].shape, x0["b"].shape[0]

    def flat_loss(buf, X, Y):
        return loss({"W": buf[:-b_size].reshape(W_shape), "b": buf[-b_size:]}, X, Y)

    naive = jax.jit(lambda buf, p, X, Y: jax.jvp(lambda b: jax.grad(flat_loss)(b, X, Y), (buf,), (p,))[1])
    x_dev = jax.numpy.asarray(x)

    def per_product(p):
        return np.asarray(naive(x_dev, jax.numpy.asarray(p), *args), dtype=np.float64)

    out.append(("jax.jit(jax.jvp(jax.grad(f))) per product", None,
                products_per_second(per_product, directions)))
    np.testing.assert_allclose(hvp(directions[1]), per_product(directions[1]), rtol=1e-8, atol=1e-12)
    return out


def hvp_tensorflow(X, Y, x0, args, loss, directions) -> list[dict]:
    import tensorflow as tf

    from dict_minimize.core.driver import build_layout
    from dict_minimize.tensorflow_api import _BACKEND

    layout, leaves = build_layout(_BACKEND, x0)
    x = _BACKEND.to_flat(leaves, layout)
    setup, rate, hvp = reused_products(_BACKEND.linearize_grad(loss, layout), x, args, directions)
    out = [("tensorflow_api linearize_grad: compiled forward-over-reverse per product", setup, rate)]

    W_shape, b_size = tuple(x0["W"].shape), int(x0["b"].shape[0])
    spec = tf.TensorSpec([x.size], tf.float64)

    @tf.function(input_signature=[spec, spec])
    def double_backward(buf, p):  # nested tapes: reverse over reverse
        with tf.GradientTape() as outer:
            outer.watch(buf)
            with tf.GradientTape() as inner:
                inner.watch(buf)
                value = loss({"W": tf.reshape(buf[:-b_size], W_shape), "b": buf[-b_size:]}, *args)
            grad = inner.gradient(value, buf)
        return outer.gradient(grad, buf, output_gradients=p)

    x_dev = tf.constant(x)

    def per_product(p):
        return double_backward(x_dev, tf.constant(p)).numpy()

    out.append(("tf.function of nested GradientTapes (reverse over reverse) per product", None,
                products_per_second(per_product, directions)))
    np.testing.assert_allclose(hvp(directions[1]), per_product(directions[1]), rtol=1e-8, atol=1e-12)
    return out


def run_hvp(framework: str, quick: bool) -> list[dict]:
    mode = "quick" if quick else "full"
    rows = []
    for samples, features, classes in HVP_SIZES[mode]:
        X, Y = logreg_data(samples, features, classes)
        minimize, loss, x0, args, _ = logreg_problem(framework, X, Y, 1e-3)
        n = features * classes + classes
        print(f"  hvp: {framework} n={n}", file=sys.stderr, flush=True)
        rng = np.random.default_rng(SEED)
        directions = [rng.normal(size=n) for _ in range(HVP_PRODUCTS[mode])]
        measure = {"torch": hvp_torch, "jax": hvp_jax, "tensorflow": hvp_tensorflow}[framework]
        results = measure(X, Y, x0, args, loss, directions)
        baseline = results[0][2]
        for variant, setup, rate in results:
            rows.append({"framework": framework, "n": n, "samples": samples, "variant": variant,
                         "setup_s": setup, "products_per_s": rate, "relative": rate / baseline})
    return rows


# ---------------------------------------------------------------------------
# Workers and orchestration
# ---------------------------------------------------------------------------


def worker(section: str, framework: str, quick: bool, repeats: int, threads: int, out: Path) -> None:
    """Run one section in one framework; write ``{"rows": [...]}``, ``{"skipped": why}`` or an error."""
    import importlib

    sys.path.insert(0, str(REPO))  # measure the checkout this script lives in
    try:
        importlib.import_module(framework)
        if framework == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # this worker process only
        if framework == "torch" and threads:
            import torch

            torch.set_num_threads(threads)
        importlib.import_module(f"dict_minimize.{framework}_api")
    except ImportError as err:
        out.write_text(json.dumps({"skipped": f"{type(err).__name__}: {err}"}))
        return
    try:
        if section == "fd":
            rows = run_fd(quick, repeats)
        elif section == "logreg":
            rows = run_logreg(framework, quick)
        else:
            rows = run_hvp(framework, quick)
    except Exception as err:  # reported in the output, not hidden
        where = traceback.extract_tb(err.__traceback__)[-1]
        out.write_text(json.dumps({"error": f"{type(err).__name__}: {str(err)[:300]} "
                                            f"(at {where.filename}:{where.lineno})"}))
        return
    out.write_text(json.dumps({"rows": rows}))


def run_worker(section: str, framework: str, args: argparse.Namespace) -> dict:
    worker_args = ["--worker", f"{section}:{framework}", "--repeats", str(args.repeats),
                   "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    return _common.run_worker(__file__, worker_args, args.threads)


def _compilation(rows: list[dict]) -> str:
    """What the timed runs include of JAX's and TensorFlow's compilation, from the run's own timings."""
    compiled = [r for r in rows if r["framework"] in ("jax", "tensorflow") and "first_call_s" in r]
    if not compiled:
        return ""
    first = ", ".join(f"{fw} {min(r['first_call_s'] for r in compiled if r['framework'] == fw):.2f}-"
                      f"{max(r['first_call_s'] for r in compiled if r['framework'] == fw):.2f} s"
                      for fw in dict.fromkeys(r["framework"] for r in compiled))
    text = f"The first one-iteration call, compilation included, took {first}."
    if not all("second_call_s" in r for r in compiled):
        # Runs before second calls were timed: the code of that run cached compiled functions
        # across minimize calls keyed on fun and layout, so its timed runs reused them.
        return (text + " That run's backends reused compiled functions across minimize calls with the "
                "same fun and layout, so its timed runs exclude tracing and compilation.")
    # A second call at least half as slow as an expensive first one compiled again; a first call
    # about as cheap as the framework's cheapest call had nothing left to compile.
    cheapest = {fw: min(r["second_call_s"] for r in compiled if r["framework"] == fw) for fw in
                {r["framework"] for r in compiled}}
    reused = [r for r in compiled if r["second_call_s"] < 0.5 * r["first_call_s"]
              or r["first_call_s"] < 3 * cheapest[r["framework"]]]
    if len(reused) == len(compiled):
        return text + (" A second such call took under half as long (or the first had nothing to compile) "
                       "in every case: the compilation was reused, and the timed runs exclude it.")
    if not reused:
        return text + (" A second such call took as long: each minimize call traced and compiled again, "
                       "and the timed runs include it.")
    names = ", ".join(f"{r['framework']} {r['method']} l2={r['l2']:g}" for r in compiled if r not in reused)
    return text + f" A second such call was not faster for {names}: those timed runs include compilation."


def _g(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}"


def report(data: dict) -> str:
    """The Markdown report of ``data`` (what ``run_all`` returns)."""
    parts = [f"Run {data['date']} on {data['machine']}; threads per worker: "
             f"{data['threads'] or 'frameworks default'}{'; --quick' if data['quick'] else ''}."]
    fd = data["rows"].get("fd", [])
    if fd:
        header = ["problem", "method", "variant", "success", "nit", "nfev", "njev", "nhev",
                  "user calls (f / c)", "final f", "max violation", "wall s", "cpu s"]
        rows = [[r["problem"], r["method"], r["variant"], "yes" if r["success"] else "no", r["nit"],
                 r["nfev"],
                 r["njev"], r["nhev"], f"{r['objective_calls']} / {r['constraint_calls']}",
                 f"{r['fun']:.6g}", "" if r["violation"] is None else f"{r['violation']:.1e}",
                 f"{r['wall_s']:.3f}", f"{r['cpu_s']:.3f}"] for r in fd]
        parts += ["\n### Autodiff derivatives vs SciPy's finite differences\n",
                  markdown_table(header, rows, right=header[4:9] + header[10:]),
                  f"\nTimes: median of {data['repeats']} runs after a warm-up run. nfev/njev/nhev as SciPy "
                  "reports them; user calls: how often the objective / the constraint functions ran "
                  "(with autodiff one call gives value and gradient; a Hessian-vector linearization is "
                  "one more)."]
        parts += [f"- not success: {r['method']} / {r['variant']}: {r['message']}"
                  for r in fd if not r["success"]]
    lr = data["rows"].get("logreg", [])
    if lr:
        best = {}
        for r in lr:
            key = (r["framework"], r["n"], r["l2"])
            best[key] = min(best.get(key, np.inf), r["fun"])
        header = ["framework", "n", "l2", "method", "success", "final loss", "loss - best", "max \\|grad\\|",
                  "nit", "nfev", "njev", "nhev", "wall s", "cpu s"]
        rows = [[r["framework"], r["n"], f"{r['l2']:g}", r["method"], "yes" if r["success"] else "no",
                 f"{r['fun']:.8f}", f"{r['fun'] - best[(r['framework'], r['n'], r['l2'])]:.1e}",
                 f"{r['grad_inf']:.1e}", r["nit"], r["nfev"], r["njev"], r["nhev"], f"{r['wall_s']:.2f}",
                 f"{r['cpu_s']:.2f}"] for r in lr]
        samples = lr[0]["samples"]
        warmups = "two one-iteration runs" if all("second_call_s" in r for r in lr) else "a one-iteration run"
        parts += ["\n### Newton-type methods on autodiff HVPs vs L-BFGS-B: multinomial logistic regression\n",
                  markdown_table(header, rows, right=header[1:3] + header[5:]),
                  f"\n{samples} samples, synthetic data (seed {SEED}), float64, loss = mean cross-entropy + "
                  f"l2/2 ||W||^2, from zeros; one timed run per method after {warmups} of the same fun "
                  f"and x0. {_compilation(lr)} loss - best: against the lowest loss of the three methods."]
        parts += [f"- not success: {r['framework']} {r['method']} l2={r['l2']:g}: {r['message']}"
                  for r in lr if not r["success"]]
    hv = data["rows"].get("hvp", [])
    if hv:
        header = ["framework", "n", "variant", "linearize s", "products / s", "relative"]
        rows = [[r["framework"], r["n"], r["variant"], "" if r["setup_s"] is None else f"{r['setup_s']:.4f}",
                 _g(r["products_per_s"]), f"{r['relative']:.2f}"] for r in hv]
        parts += ["\n### Hessian-vector products per second\n",
                  markdown_table(header, rows, right=["n", "linearize s", "products / s", "relative"]),
                  f"\nLogistic-regression loss above ({hv[0]['samples']} samples), float64, flat NumPy "
                  "vectors in and out on every side. linearize s: the one-time cost per point of the "
                  "reused linearization (SciPy asks for many products per point): linearization and first "
                  "product, less one product's time; relative: products/s over the backend's."]
    for line in data["skipped"] + data["errors"]:
        parts.append(f"- {line}")
    return "\n".join(parts)


def run_all(args: argparse.Namespace) -> dict:
    rows: dict[str, list] = {}
    skipped, errors = [], []
    for section in args.sections:
        for framework in SECTION_FRAMEWORKS[section]:
            if framework not in args.frameworks:
                continue
            print(f"{section} {framework}:", file=sys.stderr, flush=True)
            result = run_worker(section, framework, args)
            if "skipped" in result:
                skipped.append(f"{section} {framework}: skipped ({result['skipped']})")
            elif "error" in result:
                errors.append(f"{section} {framework}: {result['error']}")
            else:
                rows.setdefault(section, []).extend(result["rows"])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"date": date, "machine": machine(), "quick": args.quick, "repeats": args.repeats,
            "threads": args.threads, "rows": rows, "skipped": skipped, "errors": errors}


def _names(value: str, allowed: tuple, what: str, parser) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        parser.error(f"{what}: unknown {bad[0] if bad else '(none)'!r}; choose from {','.join(allowed)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one timed run (smoke test)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"subset of {','.join(FRAMEWORKS)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs in section fd (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="thread cap per worker (0: no cap; default 1)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the raw data (default: benchmarks/results/curvature.json, "
                             "curvature_quick.json with --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sections = _names(args.sections, SECTIONS, "--sections", parser)
    args.frameworks = _names(args.frameworks, FRAMEWORKS, "--frameworks", parser)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (no cap) or more, got {args.threads}")
    if args.json is None:
        args.json = HERE / "results" / ("curvature_quick.json" if args.quick else "curvature.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        section, framework = args.worker.split(":")
        worker(section, framework, args.quick, args.repeats, args.threads, args.out)
        return 0
    data = run_all(args)
    data["command"] = _common.command_line()
    print(report(data))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
