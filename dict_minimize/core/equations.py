"""``least_squares`` and ``root`` over pytrees: residuals of any shape, Jacobians by autodiff.

Both build one :class:`~dict_minimize.core.problem.Problem` (the same
translation ``minimize`` uses) and call one SciPy function on flat vectors.
What the user's ``fun`` returns (one tensor of any shape, or a pytree of
them) is raveled in flat order for SciPy and reshaped back in the result.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds, OptimizeResult
from scipy.optimize import least_squares as scipy_least_squares  # bound once: users may monkeypatch SciPy
from scipy.optimize import root as scipy_root

from .backend import Backend
from .callbacks import callback_style
from .driver import check_common
from .problem import Problem
from .tree import flatten_with_paths, format_path, is_container

#: Methods of ``root`` that use a Jacobian (the others approximate it themselves).
ROOT_JAC_METHODS = frozenset({"hybr", "lm"})


def _static_shape(leaf: Any) -> tuple:
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return tuple(np.shape(leaf))
    return tuple(-1 if d is None else int(d) for d in shape)


class Residuals:
    """The user's vector-valued ``fun`` over the flat vector, as SciPy calls it.

    Called as ``residuals(x)`` it returns a new 1-d NumPy array (float32
    stays float32, so that SciPy's finite differences pick a step it
    resolves); :meth:`vector` is the same in the framework, for the autodiff
    hooks. The structure and shapes of the first return are remembered:
    :meth:`shaped` puts a flat residual vector back into them, and a later
    return that differs is a ``ValueError`` naming the key.

    Parameters
    ----------
    problem : Problem
        The translation of x0.
    fun : callable
        ``fun(x, *args, **kwargs)`` returns a tensor of any shape or a pytree of them.
    args, kwargs
        Passed after ``x``.
    with_jac : bool
        ``fun`` returns ``(residuals, jacobian)`` (``root(..., jac=True)``).
    keep_jac : bool
        With ``with_jac``, return both to SciPy (else the residuals only).
    check_start : bool
        The first return must be finite (``least_squares``, as in SciPy).
    """

    def __init__(self, problem: Problem, fun: Callable, args: tuple = (), kwargs: dict | None = None,
                 *, with_jac: bool = False, keep_jac: bool = True, check_start: bool = False):
        self.problem, self.fun = problem, fun
        self.args, self.kwargs = args, dict(kwargs or {})
        self.with_jac, self.keep_jac, self.check_start = with_jac, keep_jac, check_start
        self.spec = self.shapes = self.paths = None
        self.single = False

    def vector(self, tree: Any, *args: Any) -> Any:
        """The residuals at the pytree ``tree``, joined into one framework tensor."""
        return self._join(self.fun(tree, *args, **self.kwargs))

    def _join(self, out: Any) -> Any:
        backend = self.problem.backend
        out = _as_array_if_numbers(out)
        paths, leaves, spec = flatten_with_paths(out, backend.is_leaf)
        shapes = tuple(_static_shape(leaf) for leaf in leaves)
        if self.spec is None:
            if not leaves:
                raise ValueError("fun returned no residuals")
            self.spec, self.shapes, self.paths = spec, shapes, [format_path(p, "fun(x)") for p in paths]
            self.single = len(leaves) == 1 and not is_container(out)
        elif spec != self.spec:
            raise ValueError(
                f"fun must return the same structure at every point: got {spec}, first {self.spec}"
            )
        elif shapes != self.shapes:
            i = next(k for k, (a, b) in enumerate(zip(shapes, self.shapes)) if a != b)
            raise ValueError(
                f"{self.paths[i]} has shape {shapes[i]}; "
                f"at the first evaluation it had shape {self.shapes[i]}"
            )
        if self.single:
            return out
        return backend.ravel_concat(leaves)

    def _flat(self, value: Any) -> np.ndarray:
        arr = np.asarray(self.problem.backend.to_numpy(value))
        if arr.dtype.kind not in "fc":
            arr = arr.astype(np.float64)
        return arr.reshape(-1)

    def __call__(self, x: np.ndarray) -> Any:
        first = self.spec is None
        out = self.fun(self.problem.tree_of(x), *self.args, **self.kwargs)
        if self.with_jac:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with jac=True, fun must return a (residuals, jacobian) pair")
            f = self._flat(self._join(out[0]))
            if not self.keep_jac:  # a method that approximates the Jacobian itself
                return f
            return f, self.problem.scipy_jacobian(out[1], "the jacobian returned by fun")
        f = self._flat(self._join(out))
        if first and self.check_start:
            self._check_finite(f)
        return f

    def _check_finite(self, f: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(f))
        if bad.size:
            i = int(bad[0])
            offsets = np.cumsum([0] + [int(np.prod(s)) for s in self.shapes])
            k = int(np.searchsorted(offsets, i, side="right")) - 1
            raise ValueError(
                f"Residuals are not finite in the initial point: {self.paths[k]} holds {f[i]} "
                f"(flat index {i})."
            )

    def shaped(self, f: Any) -> Any:
        """A flat residual vector in the structure and shapes ``fun`` returned."""
        if self.spec is None or f is None or np.size(f) != sum(int(np.prod(s)) for s in self.shapes):
            return f
        f = np.asarray(f).reshape(-1)
        if self.single:
            # One tensor: its shape (a scalar residual stays (1,), as SciPy returns it).
            return f.reshape(self.shapes[0]) if self.shapes[0] != () else f
        sizes = [int(np.prod(s)) for s in self.shapes]
        pieces = np.split(f, np.cumsum(sizes)[:-1])
        return self.spec.unflatten([p.reshape(s) for p, s in zip(pieces, self.shapes)])


def _as_array_if_numbers(out: Any) -> Any:
    """A list or tuple of plain numbers is one array, as SciPy reads it (res.fun an array too)."""
    if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
        _, leaves, _ = flatten_with_paths(out)
        if leaves and all(isinstance(v, (numbers.Number, np.generic)) for v in leaves):
            return np.asarray(out)
    return out


class UserJacobian:
    """The user's ``jac(x, *args, **kwargs)`` over the flat vector (dense, sparse or a pytree of blocks)."""

    def __init__(self, problem: Problem, jac: Callable, args: tuple = (), kwargs: dict | None = None):
        self.problem, self.jac, self.args, self.kwargs = problem, jac, args, dict(kwargs or {})

    def __call__(self, x: np.ndarray) -> Any:
        out = self.jac(self.problem.tree_of(x), *self.args, **self.kwargs)
        return self.problem.scipy_jacobian(out, "the jacobian returned by jac")


class AutodiffJacobian:
    """The dense ``(m, n)`` Jacobian of the residuals by the backend's autodiff."""

    def __init__(self, value_and_jac: Callable, residuals: Residuals, transpose: bool = False):
        self.value_and_jac, self.residuals, self.transpose = value_and_jac, residuals, transpose

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, jac = self.value_and_jac(x, self.residuals.args)
        return jac.T if self.transpose else jac


def autodiff_jacobian(problem: Problem, residuals: Residuals,
                      transpose: bool = False) -> AutodiffJacobian | None:
    """The residuals' Jacobian by autodiff, or None where the backend has none (NumPy)."""
    # The backends compile once per call (never across calls: fun may read changed state).
    value_and_jac = problem.backend.value_and_jac(residuals.vector, problem.layout)
    return None if value_and_jac is None else AutodiffJacobian(value_and_jac, residuals, transpose)


def _least_squares_bounds(problem: Problem, bounds: Any, lb_dict: Any, ub_dict: Any) -> Any:
    """SciPy's ``(lb, ub)`` over the flat vector from any form ``minimize`` takes."""
    if lb_dict is None and ub_dict is None:
        sides = _bound_sides(bounds)
        if sides is not None and problem.is_flat:
            return bounds  # SciPy's own forms on SciPy's own x0: SciPy checks them
        if sides is not None and any(is_container(side) for side in sides):
            lb, ub = sides
            bounds = Bounds(-np.inf if lb is None else lb, np.inf if ub is None else ub)  # per leaf
    elif _is_default_bounds(bounds):
        bounds = None  # lb_dict/ub_dict alone
    flat = problem.bounds(bounds, lb_dict, ub_dict)
    n = problem.n
    lb = np.broadcast_to(np.asarray(flat.lb, dtype=np.float64).reshape(-1), (n,)).copy()
    ub = np.broadcast_to(np.asarray(flat.ub, dtype=np.float64).reshape(-1), (n,)).copy()
    return lb, ub


def _is_default_bounds(bounds: Any) -> bool:
    """SciPy's default ``(-inf, inf)`` (or any pair of infinite scalars)."""
    sides = _bound_sides(bounds)
    return sides is not None and all(
        side is None or (not is_container(side) and np.ndim(side) == 0 and bool(np.isinf(side)))
        for side in sides
    )


def _bound_sides(bounds: Any) -> tuple | None:
    """``(lb, ub)`` of SciPy's least_squares forms (a pair, a ``Bounds``), else None."""
    if isinstance(bounds, Bounds):
        # Bounds keeps a dict side as a one-element object array.
        return tuple(
            s.reshape(-1)[0] if isinstance(s, np.ndarray) and s.dtype == object and s.size == 1 else s
            for s in (bounds.lb, bounds.ub)
        )
    if isinstance(bounds, Sequence) and not isinstance(bounds, str) and len(bounds) == 2:
        return tuple(bounds)
    return None


def _flat_option(problem: Problem, value: Any, what: str) -> Any:
    """A per-variable option (``x_scale``, ``diff_step``) given as a pytree like x0, flattened."""
    return problem.flat(value, what) if is_container(value) else value


def _is_complex_array(x0: Any) -> bool:
    """Whether x0 is SciPy's own complex x0: a complex NumPy array, number or list of numbers."""
    if is_container(x0):
        _, leaves, _ = flatten_with_paths(x0)
        if not (isinstance(x0, (list, tuple)) and all(isinstance(v, numbers.Number) for v in leaves)):
            return False
    elif not isinstance(x0, (np.ndarray, np.generic, numbers.Number)):
        return False
    return bool(np.iscomplexobj(np.asarray(x0)))


def _least_squares_callback(callback: Callable | None, problem: Problem,
                            residuals: Residuals) -> Callable | None:
    """SciPy's new-style callback calling the user's in its own style, with pytrees."""
    style = callback_style(callback, "trf")
    if style is None:
        return None

    def scipy_callback(intermediate_result):
        res = OptimizeResult(intermediate_result)
        res.x = problem.tree_of(np.array(intermediate_result.x, dtype=np.float64))
        if style == "new":
            res.fun = residuals.shaped(res.get("fun"))
            return callback(intermediate_result=res)
        return callback(res.x)

    return scipy_callback


def least_squares(
    backend: Backend,
    fun: Callable,
    x0: Any,
    jac: Any = None,
    bounds: Any = (-np.inf, np.inf),
    method: str = "trf",
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    x_scale: Any = None,
    loss: Any = "linear",
    f_scale: float = 1.0,
    diff_step: Any = None,
    tr_solver: str | None = None,
    tr_options: dict | None = None,
    jac_sparsity: Any = None,
    max_nfev: int | None = None,
    verbose: int = 0,
    args: Any = (),
    kwargs: dict | None = None,
    callback: Callable | None = None,
    workers: Any = None,
    *,
    lb_dict: Any = None,
    ub_dict: Any = None,
) -> OptimizeResult:
    """Least squares over the pytree ``x0`` with ``backend``; see the backends' ``least_squares``."""
    args, _ = check_common(fun, args, None)
    if _is_complex_array(x0):
        raise ValueError("`x0` must be real.")  # SciPy's sentence (a pytree's complex leaf is a TypeError)
    problem = Problem(backend, x0)
    residuals = Residuals(problem, fun, args, kwargs, check_start=True)
    if callable(jac):
        scipy_jac = UserJacobian(problem, jac, args, kwargs)
    elif jac is None:
        scipy_jac = autodiff_jacobian(problem, residuals) or "2-point"
    else:
        scipy_jac = jac  # SciPy's finite differences (or its error for an unknown string)
    res = scipy_least_squares(
        residuals, problem.x_start, jac=scipy_jac,
        bounds=_least_squares_bounds(problem, bounds, lb_dict, ub_dict), method=method,
        ftol=ftol, xtol=xtol, gtol=gtol, x_scale=_flat_option(problem, x_scale, "x_scale"), loss=loss,
        f_scale=f_scale, diff_step=_flat_option(problem, diff_step, "diff_step"), tr_solver=tr_solver,
        tr_options=tr_options, jac_sparsity=jac_sparsity, max_nfev=max_nfev, verbose=verbose,
        callback=_least_squares_callback(callback, problem, residuals), workers=workers,
    )
    out = problem.result(res, "grad")
    out.fun = residuals.shaped(res.fun)
    return out


def root(
    backend: Backend,
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: str = "hybr",
    jac: Any = None,
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
) -> OptimizeResult:
    """A root of ``fun`` over the pytree ``x0`` with ``backend``; see the backends' ``root``."""
    args, options = check_common(fun, args, options)
    meth = method.lower() if isinstance(method, str) else method
    if _is_complex_array(x0):  # SciPy's complex root finding (df-sane, nonlin): nothing to translate
        return scipy_root(fun, x0, args=args, method=method, jac=jac, tol=tol, callback=callback,
                          options=options)
    if meth in ROOT_JAC_METHODS and isinstance(x0, np.ndarray) and x0.ndim > 1:
        x0 = x0.reshape(-1)  # MINPACK's methods flatten an N-d array x0, as SciPy does
    problem = Problem(backend, x0)
    with_jac = jac is not None and not callable(jac) and bool(jac)
    residuals = Residuals(problem, fun, args, with_jac=with_jac, keep_jac=meth in ROOT_JAC_METHODS)
    scipy_jac = jac
    if callable(jac) and meth in ROOT_JAC_METHODS:
        scipy_jac = UserJacobian(problem, jac, args)
    elif not with_jac and meth in ROOT_JAC_METHODS:
        scipy_jac = autodiff_jacobian(problem, residuals, transpose=bool(options.get("col_deriv")))
    scipy_callback = None
    if callback is not None:
        def scipy_callback(x, f):
            return callback(problem.tree_of(np.array(x, dtype=np.float64).reshape(-1)), residuals.shaped(f))
    res = scipy_root(residuals, problem.x_start, args=(), method=method, jac=scipy_jac, tol=tol,
                     callback=scipy_callback, options=options)
    out = problem.result(res, None)
    out.fun = residuals.shaped(res.get("fun"))
    return out


def bind_least_squares(backend: Backend, module: str, jac_default: Any = None,
                       **doc: str) -> Callable[..., OptimizeResult]:
    """The public ``least_squares`` of a backend module: SciPy's signature, bound to ``backend``.

    ``jac_default`` is the default ``jac`` (None: autodiff; NumPy keeps
    SciPy's ``'2-point'``). ``doc`` fills
    :data:`dict_minimize.core.docs.LEAST_SQUARES_DOC` (``tensors``, ``tensor``,
    ``jac_none``, ``example``).
    """
    from .docs import LEAST_SQUARES_DOC

    def least_squares(
        fun: Callable, x0: Any, jac: Any = jac_default, bounds: Any = (-np.inf, np.inf), method: str = "trf",
        ftol: float | None = 1e-8, xtol: float | None = 1e-8, gtol: float | None = 1e-8, x_scale: Any = None,
        loss: Any = "linear", f_scale: float = 1.0, diff_step: Any = None, tr_solver: str | None = None,
        tr_options: dict | None = None, jac_sparsity: Any = None, max_nfev: int | None = None,
        verbose: int = 0, args: tuple = (), kwargs: dict | None = None, callback: Callable | None = None,
        workers: Any = None, **extras: Any,
    ) -> OptimizeResult:
        return _least_squares(
            backend, fun, x0, jac, bounds, method, ftol, xtol, gtol, x_scale, loss, f_scale, diff_step,
            tr_solver, tr_options, jac_sparsity, max_nfev, verbose, args, kwargs, callback, workers, **extras,
        )

    least_squares.__module__ = module
    least_squares.__doc__ = LEAST_SQUARES_DOC.format(**doc)
    return least_squares


def bind_root(backend: Backend, module: str, **doc: str) -> Callable[..., OptimizeResult]:
    """The public ``root`` of a backend module: SciPy's signature, bound to ``backend``.

    ``doc`` fills :data:`dict_minimize.core.docs.ROOT_DOC` (``tensors``,
    ``tensor``, ``jac_none``, ``example``).
    """
    from .docs import ROOT_DOC

    def root(
        fun: Callable, x0: Any, args: tuple = (), method: str = "hybr", jac: Any = None,
        tol: float | None = None, callback: Callable | None = None, options: dict | None = None,
    ) -> OptimizeResult:
        return _root(backend, fun, x0, args, method, jac, tol, callback, options)

    root.__module__ = module
    root.__doc__ = ROOT_DOC.format(**doc)
    return root


_least_squares, _root = least_squares, root
