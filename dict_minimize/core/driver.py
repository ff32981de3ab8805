"""The driver of ``minimize``: validate, translate to SciPy's flat world, dispatch, translate back.

Every backend's ``minimize`` is :func:`minimize` bound to a
:class:`~dict_minimize.core.backend.Backend`; the translation itself is
:class:`~dict_minimize.core.problem.Problem`, shared with the other entry points.
"""

from __future__ import annotations

import math
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
from .callbacks import STOPPED_BY_CALLBACK, IterationHook
from .objective import Halt, Objective
from .problem import EagerValue, Problem, build_layout  # noqa: F401  (build_layout: public here)
from .stochastic import BatchFeed

GRADIENT_FREE = frozenset({"nelder-mead", "powell", "cobyla", "cobyqa"})
HESSP_METHODS = frozenset({"newton-cg", "trust-ncg", "trust-krylov", "trust-constr"})
DENSE_HESSIAN_METHODS = frozenset({"dogleg", "trust-exact"})
#: Largest dense Hessian (bytes of float64) built by autodiff for dogleg/trust-exact.
DENSE_HESSIAN_MAX_BYTES = 2 * 1024**3
#: Consecutive restarts without an iteration before the stochastic mode gives up.
MAX_STALLED_RESTARTS = 3
#: Methods whose finite differences take the ``finite_diff_rel_step`` option.
FD_STEP_METHODS = frozenset({"bfgs", "cg", "l-bfgs-b", "tnc", "slsqp", "trust-constr"})


def _positive(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, numbers.Real) or not value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_common(fun: Callable, args: Any, options: Any, max_time: Any = None) -> tuple[tuple, dict]:
    """The checks every entry point makes; ``args`` as a tuple and a copy of ``options``."""
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    _positive("max_time", max_time)
    return args, dict(options or {})


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
    history: bool | None = None,
) -> OptimizeResult:
    """Minimize ``fun`` over the pytree ``x0`` with ``backend``; see the backends' ``minimize``."""
    args, options = check_common(fun, args, options, max_time)
    if history is not None and not isinstance(history, (bool, np.bool_)):
        raise TypeError(f"history must be True, False or None, got {history!r}")
    if epochs is not None and batches is None:
        raise TypeError("epochs= only applies to the stochastic mode (batches=)")
    problem = Problem(backend, x0)
    if history is None:
        # SciPy's own case records nothing by default: SciPy's result has no
        # history, and recording one is a callback inside SciPy's loop, several
        # percent of its cost at small n (benchmarks/dropin_pairs.py).
        history = not problem.scipy_semantics
    scipy_bounds = problem.bounds(bounds, lb_dict, ub_dict)
    if method is None:  # SciPy's choice, made on what the user gave
        has_bounds = bounds is not None or lb_dict is not None or ub_dict is not None
        method = "SLSQP" if constraints else "L-BFGS-B" if has_bounds else "BFGS"
    meth = method.lower() if isinstance(method, str) else "_custom"
    if meth == "_custom" and problem.is_flat:
        # A custom method gets the user's own bounds and constraints, as from SciPy.
        scipy_bounds, scipy_constraints = bounds, constraints
    else:
        scipy_constraints = problem.constraints(constraints, meth)
    feed = _batch_feed(batches, epochs, max_time, options)

    def make_args(batch: Any) -> tuple:
        return (batch,) + args

    objective, value, scipy_jac = _objective(problem, fun, jac, meth)
    objective.deadline = time.perf_counter() + max_time if max_time is not None else None
    objective.args = make_args(feed.current) if feed is not None else args
    scipy_hess, scipy_hessp = _curvature(problem, fun, jac, hess, hessp, objective, meth)
    scipy_jac = _finite_difference_steps(problem, jac, scipy_jac, meth, options, value, objective)

    grad_key = "grad" if meth == "trust-constr" else "jac"
    hook = problem.hook(meth, callback, objective, progress=progress, deadline=objective.deadline,
                        feed=feed, make_args=make_args, total=options.get("maxiter"), record=history)
    scipy_callback = hook.scipy_callback(_legacy_callback(meth, scipy_bounds))

    def run(x_from: np.ndarray, opts: dict) -> OptimizeResult:
        return scipy_minimize(
            objective.fun, x_from, args=(), method=method, jac=scipy_jac,
            hess=scipy_hess, hessp=scipy_hessp, bounds=scipy_bounds,
            constraints=scipy_constraints if scipy_constraints else (),
            tol=tol, callback=scipy_callback, options=opts,
        )

    try:
        if feed is None:
            res = _run_once(run, problem.x_start, options, objective, hook)
        else:
            res = _run_stochastic(run, problem.x_start, options, objective, hook, feed, make_args)
    except KeyboardInterrupt:
        res = _stopped_at_best(INTERRUPTED, objective, hook, problem.x_start, grad_key)
    except Exception as err:
        # The user's own exception, unchanged, with the work done attached.
        best = _stopped_at_best(f"Stopped: {type(err).__name__} raised.", objective, hook,
                                problem.x_start, grad_key)
        _attach(err, _finish(problem, best, meth, hook))
        raise
    finally:
        hook.close()
    return _finish(problem, _best_if_not_finite(res, objective, grad_key, problem.scipy_semantics), meth, hook)


def _batch_feed(batches: Any, epochs: int | None, max_time: Any, options: dict) -> BatchFeed | None:
    """The stochastic mode's minibatch source, or None; a re-iterable one needs a limit."""
    if batches is None:
        return None
    feed = BatchFeed(batches, epochs)
    if feed.reiterable and max_time is None and epochs is None and "maxiter" not in options:
        raise ValueError(
            "the stochastic mode over a re-iterable source needs a limit: "
            "options={'maxiter': ...}, epochs= or max_time="
        )
    return feed


def _objective(problem: Problem, fun: Callable, jac: Any, meth: str) -> tuple[Objective, Callable, Any]:
    """The memoized objective, the plain value function and the ``jac`` SciPy receives."""
    backend, layout = problem.backend, problem.layout
    eager_value = problem.eager_value(fun)
    uses_grad = meth not in GRADIENT_FREE
    value = eager_value
    if jac is not True and not uses_grad:
        value = backend.value(fun, layout) or eager_value
    if jac is True:
        def value_and_grad(x, a):
            out = fun(problem.tree_at(x, requires_grad=True), *a)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with jac=True, fun must return a (value, gradient) pair")
            return backend.to_scalar(out[0]), problem.flat(out[1], "the gradient returned by fun")

        objective = Objective(lambda x, a: value_and_grad(x, a)[0], value_and_grad)
        return objective, value, objective.jac
    if callable(jac):
        objective = Objective(value)

        def scipy_jac(x):
            grad = jac(problem.tree_at(x), *objective.args)
            return objective.note_grad(problem.flat(grad, "the gradient returned by jac"))

        return objective, value, scipy_jac
    autodiff = backend.value_and_grad(fun, layout) if jac is None and uses_grad else None
    objective = Objective(value, autodiff)
    return objective, value, objective.jac if autodiff is not None else jac


def _curvature(problem: Problem, fun, jac, hess, hessp, objective: Objective, meth: str) -> tuple:
    """The ``hess`` and ``hessp`` SciPy receives: the user's over flat vectors, or autodiff's."""
    scipy_hess, scipy_hessp = hess, hessp
    tree_of, layout = problem.tree_of, problem.layout
    if callable(hessp):
        def scipy_hessp(x, p):
            product = hessp(tree_of(x), tree_of(p), *objective.args)
            return problem.flat(product, "the product returned by hessp")
    if callable(hess) and not isinstance(hess, HessianUpdateStrategy):
        def scipy_hess(x):
            h = hess(tree_of(x), *objective.args)
            if isinstance(h, LinearOperator) or hasattr(h, "tocsr"):
                return h
            return np.asarray(problem.backend.to_numpy(h), dtype=np.float64).reshape(layout.n, layout.n)
    if hess is None and hessp is None and (jac is None or callable(jac)):
        scipy_hess, scipy_hessp = _autodiff_curvature(problem.backend, fun, layout, objective, meth)
    return scipy_hess, scipy_hessp


def _finite_difference_steps(problem: Problem, jac, scipy_jac, meth: str, options: dict,
                             value: Callable, objective: Objective) -> Any:
    """SciPy's finite differences with a step the leaves' precision resolves (sets ``options``)."""
    if not (scipy_jac is jac and not callable(jac) and meth in FD_STEP_METHODS):
        return scipy_jac
    step = problem.fd_rel_step(jac)
    if step is None:
        return scipy_jac
    options.setdefault("finite_diff_rel_step", step)
    if meth != "trust-constr" and jac in (None, False, "2-point"):
        # SciPy's relative step is 0 where x is 0 and then falls back to
        # float64's step; the absolute step ``eps`` of these methods (the
        # same forward difference) does not.
        options.setdefault("eps", step)
        return None
    if jac == "3-point":
        return _central_differences(value, objective, step)
    return scipy_jac


def _legacy_callback(meth: str, scipy_bounds: Any) -> bool:
    """Whether SciPy must get a ``callback(xk)`` rather than the new style."""
    fixed = isinstance(scipy_bounds, scipy.optimize.Bounds) and np.any(
        np.asarray(scipy_bounds.lb) == np.asarray(scipy_bounds.ub)
    )
    # SciPy prints the callback when it removes fixed variables from a
    # new-style one; the legacy style does not reach that line. A custom
    # method may call callback(xk) only.
    return meth in ("tnc", "_custom") or (fixed and meth in ("l-bfgs-b", "slsqp"))


def _run_once(run: Callable, x_start: np.ndarray, options: dict, objective: Objective,
              hook: IterationHook) -> OptimizeResult:
    """One SciPy run; a :class:`Halt` ends it with the best or last point."""
    try:
        return run(x_start, options)
    except Halt as stop:
        return _halted(stop, objective, hook, x_start)


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


INTERRUPTED = "Stopped: interrupted (KeyboardInterrupt); x is the best point evaluated."


def _result_at(x: np.ndarray, f: float, message: str, objective: Objective, hook: IterationHook,
               grad_key: str = "jac", status: int = 99, success: bool = False) -> OptimizeResult:
    """A result at ``x`` for a run the driver ended (with the gradient there when it is known)."""
    res = OptimizeResult(x=x, fun=f, success=success, status=status, message=message,
                         nit=hook.nit, nfev=objective.n_evaluations)
    g = objective.last_grad_at(x)
    if g is not None:
        res[grad_key] = g
    return res


def _stopped_at_best(message: str, objective: Objective, hook: IterationHook,
                     x_start: np.ndarray, grad_key: str) -> OptimizeResult:
    """The result of a run cut short by an interrupt or an exception: the best point so far.

    Nothing is evaluated: without a finite value yet, the last iterate (or x0) with ``fun=nan``.
    """
    if objective.best_x is not None:
        x, f = objective.best_x, objective.best_f
    else:
        x, f = next(v for v in (hook.last_x, objective.last_x, x_start) if v is not None), np.nan
    return _result_at(x, f, message, objective, hook, grad_key)


def _attach(err: BaseException, best: OptimizeResult) -> None:
    """Hang the best point on the user's exception as ``err.best_result``."""
    try:
        err.best_result = best
    except (AttributeError, TypeError):  # an exception type that takes no attributes
        return
    if hasattr(err, "add_note"):  # Python 3.11+
        err.add_note(f"dict_minimize: the best point evaluated (fun={best.fun}) is in `err.best_result`.")


def _best_if_not_finite(res: OptimizeResult, objective: Objective, grad_key: str,
                        scipy_semantics: bool) -> OptimizeResult:
    """A run that ended where the objective is NaN or +inf returns the best finite point instead.

    ``-inf`` is a minimum, not a fault. With ``scipy_semantics`` (numpy_api's
    flat ndarray x0, where SciPy's own tests check ``fun`` is NaN) SciPy's
    result stays as it is and the best point comes as ``best_x``/``best_fun``.
    """
    f = res.get("fun")
    if type(f) is float and f < math.inf:  # the common case (finite or -inf), without NumPy
        return res
    if objective.best_x is None or f is None or np.size(f) != 1:
        return res
    f_real = float(np.real(np.asarray(f)).reshape(()))
    if not (np.isnan(f_real) or f_real == np.inf):
        return res
    out = OptimizeResult(res)
    if scipy_semantics:
        out.best_x, out.best_fun = objective.best_x, objective.best_f
        return out
    out.x, out.fun, out.success = objective.best_x, objective.best_f, False
    out.message = (f"{res.get('message', '')} The objective at SciPy's last point was {f}: "
                   "x is the best finite point evaluated.").strip()
    g = objective.last_grad_at(out.x)
    if g is not None:
        out[grad_key] = g
    else:
        out.pop(grad_key, None)
    return out


def _halted(stop: Halt, objective: Objective, hook: IterationHook, x_start: np.ndarray) -> OptimizeResult:
    """The result of a run ended by :class:`Halt` (time limit, TNC's StopIteration, batches)."""
    if stop.best and objective.best_x is not None:
        x, f = objective.best_x, objective.best_f
    else:
        x = next(v for v in (hook.last_x, objective.last_x, x_start) if v is not None)
        deadline, objective.deadline = objective.deadline, None
        f = objective.fun(np.array(x))  # a writable copy: fun may be handed it as it is
        objective.deadline = deadline
    return _result_at(x, f, stop.message, objective, hook, status=stop.status, success=stop.success)


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


def _finish(problem: Problem, res: OptimizeResult, meth: str, hook: IterationHook) -> OptimizeResult:
    """SciPy's result with ``x`` and the objective gradient as pytrees, ``fun`` a float."""
    out = problem.result(res, "grad" if meth == "trust-constr" else "jac", hook)
    fun = out.get("fun")
    if "x" in res and type(fun) is not float and fun is not None and np.size(fun) == 1:
        out.fun = float(np.asarray(fun).reshape(()))
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
