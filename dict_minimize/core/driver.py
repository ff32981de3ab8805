"""The one driver: validate, translate to SciPy's flat world, dispatch, translate back.

Every backend's ``minimize`` is this function bound to a
:class:`~dict_minimize.core.backend.Backend`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
from scipy.optimize import HessianUpdateStrategy, OptimizeResult
from scipy.optimize import minimize as scipy_minimize  # bound once: users may monkeypatch SciPy
from scipy.sparse.linalg import LinearOperator

from .backend import Backend
from .bounds import make_bounds
from .callbacks import STOPPED_BY_CALLBACK, IterationHook
from .constraints import make_constraints
from .gradients import flat_gradient
from .objective import Halt, Objective
from .stochastic import BatchFeed
from .tree import Layout, flatten_with_paths, format_path

GRADIENT_FREE = frozenset({"nelder-mead", "powell", "cobyla", "cobyqa"})
HESSP_METHODS = frozenset({"newton-cg", "trust-ncg", "trust-krylov", "trust-constr"})
DENSE_HESSIAN_METHODS = frozenset({"dogleg", "trust-exact"})
#: Largest dense Hessian (bytes of float64) built by autodiff for dogleg/trust-exact.
DENSE_HESSIAN_MAX_BYTES = 2 * 1024**3
#: Consecutive restarts without an iteration before the stochastic mode gives up.
MAX_STALLED_RESTARTS = 3
#: Methods whose finite differences take the ``finite_diff_rel_step`` option.
FD_STEP_METHODS = frozenset({"bfgs", "cg", "l-bfgs-b", "tnc", "slsqp", "trust-constr"})
_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0**-7,
        "float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def _dtype_name(dtype: Any) -> str:
    """'float32' from a NumPy, torch, TensorFlow or JAX dtype."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


def _fd_rel_step(layout: Layout, jac: Any) -> float | None:
    """A finite-difference step the leaves' precision can resolve, or None for float64.

    SciPy's default relative step (sqrt of float64 eps, ~1.5e-8) is below
    float32's eps: x + h rounds back to x in the leaf's dtype and the
    difference quotient is zero. Use the same rule with the leaves' eps.
    """
    eps = max(_EPS.get(_dtype_name(d), _EPS["float64"]) for d in layout.dtypes)
    if eps <= _EPS["float64"]:
        return None
    return eps ** (1 / 3) if jac == "3-point" else eps**0.5


class EagerValue:
    """``fun`` over the flat vector, called eagerly: ``value(x, args) -> float``.

    A plain object rather than a closure so that it pickles whenever the
    user's ``fun`` does (SciPy's ``workers=`` option sends it to other processes).
    """

    def __init__(self, backend: Backend, layout: Layout, fun: Callable):
        self.backend, self.layout, self.fun = backend, layout, fun

    def __call__(self, x: np.ndarray, args: tuple) -> float:
        leaves = self.backend.from_flat(x, self.layout)
        return self.backend.to_scalar(self.fun(self.layout.unflatten(leaves), *args))


def build_layout(backend: Backend, x0: Any) -> tuple[Layout, list]:
    """x0's layout and leaves, with the dtype and emptiness checks."""
    paths, leaves, spec = flatten_with_paths(x0, backend.is_leaf)
    if not leaves:
        raise ValueError("x0 is empty: it holds no tensor to optimize")
    names = [format_path(p) for p in paths]
    shapes, dtypes = zip(*(backend.leaf_shape_dtype(leaf, name) for leaf, name in zip(leaves, names)))
    layout = Layout.build(spec, names, shapes, dtypes, backend.layout_info(leaves, dtypes), paths)
    if layout.n == 0:
        raise ValueError("x0 has no elements: every tensor in it is empty")
    return layout, leaves


def _check_finite(x: np.ndarray, layout: Layout) -> None:
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"x0 has a non-finite value ({x[i]}) in {layout.path_of_index(i)}")


def _positive(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, numbers.Real) or not value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def minimize(
    backend: Backend,
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: str | Callable | None = None,
    jac: Any = None,
    hess: Any = None,
    hessp: Callable | None = None,
    bounds: Any = None,
    constraints: Any = (),
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
    *,
    batches: Any = None,
    epochs: int | None = None,
    max_time: float | None = None,
    progress: Any = False,
    lb_dict: Any = None,
    ub_dict: Any = None,
) -> OptimizeResult:
    """Minimize ``fun`` over the pytree ``x0`` with ``backend``; see the backends' ``minimize``."""
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    options = dict(options or {})
    _positive("max_time", max_time)
    if epochs is not None and batches is None:
        raise TypeError("epochs= only applies to the stochastic mode (batches=)")

    x0 = backend.prepare_x0(x0)
    is_leaf = backend.is_leaf
    layout, leaves = build_layout(backend, x0)
    x_start = backend.to_flat(leaves, layout)
    _check_finite(x_start, layout)

    def tree_of(x: np.ndarray, requires_grad: bool = False) -> Any:
        return layout.unflatten(backend.from_flat(x, layout, requires_grad))

    def flat(tree: Any, what: str) -> np.ndarray:
        return flat_gradient(backend, layout, tree, is_leaf, what)

    scipy_bounds = make_bounds(bounds, lb_dict, ub_dict, x0, layout, backend, is_leaf)
    if method is None:  # SciPy's choice, made on what the user gave
        has_bounds = bounds is not None or lb_dict is not None or ub_dict is not None
        method = "SLSQP" if constraints else "L-BFGS-B" if has_bounds else "BFGS"
    meth = method.lower() if isinstance(method, str) else "_custom"
    x0_is_flat = len(layout.shapes) == 1 and layout.shapes[0] == (layout.n,) and not layout.keys[0]
    if meth == "_custom" and x0_is_flat:
        # A custom method gets the user's own bounds and constraints, as from SciPy.
        scipy_bounds, scipy_constraints = bounds, constraints
    else:
        scipy_constraints = make_constraints(constraints, tree_of, backend, layout, is_leaf, meth)

    # ---- stochastic mode -------------------------------------------------
    feed = BatchFeed(batches, epochs) if batches is not None else None
    if feed is not None and feed.reiterable and max_time is None and epochs is None and "maxiter" not in options:
        raise ValueError(
            "the stochastic mode over a re-iterable source needs a limit: "
            "options={'maxiter': ...}, epochs= or max_time="
        )

    def make_args(batch: Any) -> tuple:
        return (batch,) + args

    deadline = time.perf_counter() + max_time if max_time is not None else None

    # ---- objective and gradient -----------------------------------------
    eager_value = EagerValue(backend, layout, fun)
    uses_grad = meth not in GRADIENT_FREE
    value = eager_value
    if jac is not True and not uses_grad:
        value = backend.value(fun, layout) or eager_value
    scipy_jac: Any = jac
    if jac is True:
        def value_and_grad(x, a):
            out = fun(tree_of(x, requires_grad=True), *a)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with jac=True, fun must return a (value, gradient) pair")
            return backend.to_scalar(out[0]), flat(out[1], "the gradient returned by fun")

        objective = Objective(lambda x, a: value_and_grad(x, a)[0], value_and_grad)
        scipy_jac = objective.jac
    elif callable(jac):
        objective = Objective(value)

        def scipy_jac(x):
            return objective.note_grad(flat(jac(tree_of(x), *objective.args), "the gradient returned by jac"))
    else:
        autodiff = backend.value_and_grad(fun, layout) if jac is None and uses_grad else None
        objective = Objective(value, autodiff)
        if autodiff is not None:
            scipy_jac = objective.jac
    objective.deadline = deadline
    objective.args = make_args(feed.current) if feed is not None else args

    # ---- curvature -------------------------------------------------------
    scipy_hess, scipy_hessp = hess, hessp
    if callable(hessp):
        def scipy_hessp(x, p):
            return flat(hessp(tree_of(x), tree_of(p), *objective.args), "the product returned by hessp")
    if callable(hess) and not isinstance(hess, HessianUpdateStrategy):
        def scipy_hess(x):
            h = hess(tree_of(x), *objective.args)
            if isinstance(h, LinearOperator) or hasattr(h, "tocsr"):
                return h
            return np.asarray(backend.to_numpy(h), dtype=np.float64).reshape(layout.n, layout.n)
    if hess is None and hessp is None and (jac is None or callable(jac)):
        scipy_hess, scipy_hessp = _autodiff_curvature(backend, fun, layout, objective, meth)

    if scipy_jac is jac and not callable(jac) and meth in FD_STEP_METHODS:
        step = _fd_rel_step(layout, jac)
        if step is not None:
            options.setdefault("finite_diff_rel_step", step)
            if meth != "trust-constr" and jac in (None, False, "2-point"):
                # SciPy's relative step is 0 where x is 0 and then falls back
                # to float64's step; the absolute step ``eps`` of these
                # methods (the same forward difference) does not.
                options.setdefault("eps", step)
                scipy_jac = None
            elif jac == "3-point":
                scipy_jac = _central_differences(value, objective, step)

    # ---- the run ---------------------------------------------------------
    fixed = isinstance(scipy_bounds, scipy.optimize.Bounds) and np.any(
        np.asarray(scipy_bounds.lb) == np.asarray(scipy_bounds.ub)
    )
    hook = IterationHook(
        meth, callback, tree_of, objective, progress=progress, deadline=deadline,
        feed=feed, make_args=make_args, total=options.get("maxiter"),
    )
    # SciPy prints the callback when it removes fixed variables from a
    # new-style one; the legacy style does not reach that line. A custom
    # method may call callback(xk) only.
    legacy = meth in ("tnc", "_custom") or (fixed and meth in ("l-bfgs-b", "slsqp"))

    def run(x_from: np.ndarray, opts: dict) -> OptimizeResult:
        return scipy_minimize(
            objective.fun, x_from, args=(), method=method, jac=scipy_jac,
            hess=scipy_hess, hessp=scipy_hessp, bounds=scipy_bounds,
            constraints=scipy_constraints if scipy_constraints else (),
            tol=tol, callback=hook.scipy_callback(legacy), options=opts,
        )

    try:
        if feed is None:
            try:
                res = run(x_start, options)
            except Halt as stop:
                res = _halted(stop, objective, hook, x_start)
        else:
            res = _run_stochastic(run, x_start, options, objective, hook, feed, make_args)
    finally:
        hook.close()
    return _finish(res, tree_of, layout, meth, hook)


def _central_differences(value: Callable, objective: Objective, rel_step: float) -> Callable:
    """'3-point' gradient with steps ``rel_step * max(1, |x|)`` a low-precision leaf resolves."""

    def jac(x: np.ndarray) -> np.ndarray:
        h = rel_step * np.maximum(1.0, np.abs(x))
        g = np.empty_like(x, dtype=np.float64)
        for i in range(x.size):
            e = np.zeros_like(x, dtype=np.float64)
            e[i] = h[i]
            g[i] = (value(x + e, objective.args) - value(x - e, objective.args)) / (2 * h[i])
        return g

    return jac


def _autodiff_curvature(backend, fun, layout, objective, meth):
    """Hessian-vector products (or a dense Hessian) by autodiff, where the method uses them."""
    if meth not in HESSP_METHODS | DENSE_HESSIAN_METHODS:
        return None, None
    linearize = backend.linearize_grad(fun, layout)
    if linearize is None:
        return None, None
    if meth in HESSP_METHODS:
        return None, lambda x, p: objective.hvp_at(linearize, x, p)
    n = layout.n
    if n * n * 8 > DENSE_HESSIAN_MAX_BYTES:
        raise ValueError(
            f"method {meth!r} needs a dense {n} x {n} Hessian ({n * n * 8 / 2**30:.1f} GiB); "
            "use a method that takes Hessian-vector products instead: "
            "'trust-krylov', 'trust-ncg', 'Newton-CG' or 'trust-constr'"
        )

    def dense_hessian(x):
        # One (n, n) array, filled a column at a time and symmetrized in
        # place: peak memory stays at the n * n * 8 bytes checked above.
        h = np.empty((n, n))
        e = np.zeros(n)
        for i in range(n):
            e[i] = 1.0
            h[:, i] = objective.hvp_at(linearize, x, e)
            e[i] = 0.0
        h += h.T  # symmetric up to rounding; the methods assume it
        h *= 0.5
        return h

    return dense_hessian, None


def _halted(stop: Halt, objective: Objective, hook: IterationHook, x_start: np.ndarray) -> OptimizeResult:
    """The result of a run ended by :class:`Halt` (time limit, TNC's StopIteration, batches)."""
    if stop.best and objective.best_x is not None:
        x, f = objective.best_x, objective.best_f
    else:
        x = next(v for v in (hook.last_x, objective._x, x_start) if v is not None)
        deadline, objective.deadline = objective.deadline, None
        f = objective.fun(x)
        objective.deadline = deadline
    res = OptimizeResult(
        x=x, fun=f, success=stop.success, status=stop.status, message=stop.message,
        nit=hook.nit, nfev=objective.n_evaluations,
    )
    g = objective.last_grad_at(x)
    if g is not None:
        res.jac = g
    return res


def _run_stochastic(run, x_start, options, objective, hook, feed, make_args) -> OptimizeResult:
    """Resume SciPy from the current point until the run's own limits are reached.

    A method that stops because the objective changed under it (a line
    search that fails on a new batch, a convergence test passed on one
    batch) does not end the run.
    """
    maxiter = options.get("maxiter")
    x, stalled, restarts = x_start, 0, 0
    totals = {"nfev": 0, "njev": 0, "nhev": 0}
    while True:
        opts = dict(options)
        if maxiter is not None:
            opts["maxiter"] = maxiter - hook.nit
        nit_before = hook.nit
        evaluations_before = objective.n_evaluations
        try:
            res = run(x, opts)
        except Halt as stop:
            res = _halted(stop, objective, hook, x)
            # SciPy's counts of the interrupted run are lost: count ours.
            done = objective.n_evaluations - evaluations_before
            totals["nfev"] += done
            if objective.has_grad:
                totals["njev"] += done
            break
        for key in totals:
            totals[key] += int(res.get(key, 0) or 0)
        if maxiter is not None and hook.nit >= maxiter:
            break
        if res.get("status") == 99 and res.get("message") == STOPPED_BY_CALLBACK:
            break
        restarts += 1
        x = np.asarray(res.x, dtype=np.float64)
        if hook.nit == nit_before:
            stalled += 1
            if stalled >= MAX_STALLED_RESTARTS:
                res.message = f"Stopped: no progress on {stalled} consecutive minibatches."
                break
            try:
                objective.set_args(make_args(feed.advance()))
            except Halt as stop:
                res = _halted(stop, objective, hook, x)
                break
        else:
            stalled = 0
    res.update({k: v for k, v in totals.items() if v})
    res.nit = hook.nit
    res.restarts = restarts
    res.epochs = feed.epoch
    return res


def _finish(res: OptimizeResult, tree_of: Callable, layout: Layout, meth: str, hook: IterationHook) -> OptimizeResult:
    """SciPy's result with ``x`` and the objective gradient as pytrees."""
    out = OptimizeResult(res)
    if "x" not in res:  # a custom method may return anything
        return out
    out.x = tree_of(np.asarray(res.x, dtype=np.float64).reshape(-1))
    grad_key = "grad" if meth == "trust-constr" else "jac"
    g = res.get(grad_key)
    if g is not None and np.size(g) == layout.n:
        out[grad_key] = tree_of(np.asarray(g, dtype=np.float64).reshape(-1))
    if "fun" in out and out.fun is not None and np.size(out.fun) == 1:
        out.fun = float(np.asarray(out.fun).reshape(()))
    if hook.stopped_by_user:
        # COBYQA reports success (with its own status and message) when the
        # callback stops it; a stopped run is not a success.
        out.success = False
    out.history = {k: np.asarray(v) for k, v in hook.history.items()}
    return out


def bind(backend: Backend, module: str, **doc: str) -> Callable[..., OptimizeResult]:
    """The public ``minimize`` of a backend module: SciPy's signature, the driver bound to ``backend``.

    ``doc`` fills :data:`dict_minimize.core.docs.MINIMIZE_DOC` (``tensors``,
    ``tensor``, ``jac_none``, ``hess_none``, ``cons_none``, ``example``).
    """
    from .docs import MINIMIZE_DOC

    def minimize(
        fun: Callable,
        x0: Any,
        args: tuple = (),
        method: str | Callable | None = None,
        jac: Any = None,
        hess: Any = None,
        hessp: Callable | None = None,
        bounds: Any = None,
        constraints: Any = (),
        tol: float | None = None,
        callback: Callable | None = None,
        options: dict | None = None,
        **extras: Any,
    ) -> OptimizeResult:
        return _driver_minimize(
            backend, fun, x0, args, method, jac, hess, hessp, bounds, constraints,
            tol, callback, options, **extras,
        )

    minimize.__module__ = module
    minimize.__doc__ = MINIMIZE_DOC.format(**doc)
    return minimize


_driver_minimize = minimize
