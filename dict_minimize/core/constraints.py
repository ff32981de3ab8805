"""Constraints whose functions take the pytree, translated to SciPy's flat forms.

A constraint function may return a tensor of any shape; SciPy sees it
raveled in C order. A user Jacobian may be a dense ``(m, n)`` matrix over
the flat vector or a pytree shaped like x0 whose leaves have shape
``(m, *leaf.shape)``. Without one, the backend's autodiff supplies it
(NumPy keeps SciPy's finite differences); for trust-constr the constraint
Hessians ``hess(x, v)`` then come from Hessian-vector products of ``v . c(x)``
instead of SciPy's quasi-Newton default. ``LinearConstraint`` matrices
are over the flat vector (see :mod:`dict_minimize.core.tree` for its order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.optimize import BFGS, LinearConstraint, NonlinearConstraint
from scipy.sparse import issparse
from scipy.sparse.linalg import LinearOperator

from .backend import NotConnected
from .objective import same_point
from .tree import Layout, flatten_with_paths, format_path, is_container


def flat_vector(backend, value: Any) -> np.ndarray:
    """A constraint value of any shape as a 1-d float64 array."""
    return np.asarray(backend.to_numpy(value), dtype=np.float64).reshape(-1)


def flat_jacobian(backend, layout: Layout, jac: Any, is_leaf, what: str = "constraint jac") -> np.ndarray:
    """A user Jacobian (dense ``(m, n)`` or an x0-shaped pytree of ``(m, *shape)``) as ``(m, n)``.

    For an x0 that is one leaf, the Jacobian is read as SciPy reads it: any
    array-like (a nested list too), and sparse matrices and
    ``LinearOperator``s pass through unchanged.
    """
    if issparse(jac) or isinstance(jac, LinearOperator):
        if len(layout.shapes) != 1:
            raise ValueError(f"{what} is sparse or a LinearOperator: only for an x0 that is one tensor")
        return jac
    if len(layout.shapes) == 1 and not layout.keys[0]:  # one tensor: SciPy's array-likes
        arr = np.asarray(backend.to_numpy(jac), dtype=np.float64)
        return np.atleast_2d(arr) if arr.size == layout.n and arr.ndim < 2 else _dense(arr, layout, what)
    if is_container(jac):
        paths, leaves, _ = flatten_with_paths(jac, is_leaf)
        if len(leaves) != len(layout.shapes):
            given = {format_path(p) for p in paths}
            missing = [p for p in layout.paths if p not in given]
            extra = sorted(given - set(layout.paths))
            detail = f"; it has no {', '.join(missing[:3])}" if missing else ""
            detail += f"; x0 has no {', '.join(extra[:3])}" if extra else ""
            raise ValueError(f"{what} has {len(leaves)} leaves; x0 has {len(layout.shapes)}{detail}")
        blocks = []
        for path, leaf, size in zip(layout.paths, leaves, layout.sizes):
            arr = np.asarray(backend.to_numpy(leaf), dtype=np.float64)
            if arr.size % max(size, 1):
                raise ValueError(f"{what} for {path} has shape {arr.shape}, not (m, *{path}.shape)")
            blocks.append(arr.reshape(-1, size))
        return np.hstack(blocks) if blocks else np.zeros((0, 0))
    return _dense(np.asarray(backend.to_numpy(jac), dtype=np.float64), layout, what)


def _dense(arr: np.ndarray, layout: Layout, what: str) -> np.ndarray:
    if arr.size % max(layout.n, 1):
        raise ValueError(f"{what} has shape {arr.shape}; expected (m, {layout.n}) over the flat vector")
    return arr.reshape(-1, layout.n)


class _JacMemo:
    """Constraint value and autodiff Jacobian from one pass, memoized by x."""

    def __init__(self, value_and_jac: Callable, args: tuple, name: str = "a constraint"):
        self._vj = value_and_jac
        self._args = args
        self._name = name
        self._x = None

    def _at(self, x):
        if not same_point(self._x, x):
            try:
                self._c, self._j = self._vj(x, self._args)
            except NotConnected as e:
                raise NotConnected(f"{self._name}: {e}") from None
            self._x = np.array(x, dtype=np.float64, copy=True)

    def fun(self, x):
        self._at(x)
        return self._c

    def jac(self, x):
        self._at(x)
        return self._j


def _translate_one(con, tree_of, backend, layout, is_leaf, index, method):
    if isinstance(con, LinearConstraint):
        return con

    if isinstance(con, NonlinearConstraint):
        cfun, cjac, cargs = con.fun, con.jac, ()
    elif isinstance(con, Mapping):
        unknown = set(con) - {"type", "fun", "jac", "args"}
        if unknown:
            raise ValueError(f"constraints[{index}] has unknown field(s) {sorted(unknown)}")
        if con.get("type") not in ("eq", "ineq"):
            raise ValueError(f"constraints[{index}]['type'] must be 'eq' or 'ineq', got {con.get('type')!r}")
        if not callable(con.get("fun")):
            raise TypeError(f"constraints[{index}]['fun'] must be callable")
        cfun, cjac, cargs = con["fun"], con.get("jac"), tuple(con.get("args", ()))
    else:
        raise TypeError(
            f"constraints[{index}] must be a dict, NonlinearConstraint or LinearConstraint, "
            f"got {type(con).__name__}"
        )

    def value(x):
        return flat_vector(backend, cfun(tree_of(x), *cargs))

    # NonlinearConstraint's default jac is '2-point': that counts as not given.
    user_jac = callable(cjac)
    new_jac = None
    autodiff = None
    if user_jac:
        def new_jac(x):
            return flat_jacobian(backend, layout, cjac(tree_of(x), *cargs), is_leaf)
    elif (
        cjac in (None, "2-point")
        and method not in ("cobyla", "cobyqa")  # they use constraint values only
        and (vj := backend.value_and_jac(cfun, layout)) is not None
    ):
        autodiff = _JacMemo(vj, cargs, f"constraints[{index}]")
        value, new_jac = autodiff.fun, autodiff.jac

    hess = con.hess if isinstance(con, NonlinearConstraint) else None
    if callable(hess):
        user_hess = hess

        def hess(x, v):
            return user_hess(tree_of(x), v)
    elif autodiff is not None and method == "trust-constr" and _is_default_hess(hess):
        hess = _autodiff_hess(backend, cfun, cargs, layout) or hess

    if isinstance(con, NonlinearConstraint) or (method == "trust-constr" and hess is not None):
        jac_arg = new_jac if new_jac is not None else cjac
        if isinstance(con, NonlinearConstraint):
            lb, ub = _flat_side(con.lb), _flat_side(con.ub)
            extra = dict(keep_feasible=con.keep_feasible, finite_diff_rel_step=con.finite_diff_rel_step,
                         finite_diff_jac_sparsity=con.finite_diff_jac_sparsity)
        else:  # a dict, as SciPy itself converts it for trust-constr
            lb, ub, extra = 0.0, (0.0 if con["type"] == "eq" else np.inf), {}
        return NonlinearConstraint(value, lb, ub, jac=jac_arg if jac_arg is not None else "2-point",
                                   hess=hess, **extra)
    out = {"type": con["type"], "fun": value}
    if new_jac is not None:
        out["jac"] = new_jac
    elif cjac is not None:
        out["jac"] = cjac
    return out


def _is_default_hess(hess) -> bool:
    """``None``, or the fresh ``BFGS()`` SciPy puts in when no ``hess`` is given."""
    return hess is None or (
        type(hess) is BFGS
        and getattr(hess, "first_iteration", None) in (None, True)  # never initialized
        and hess.exception_strategy == "skip_update"
    )


def _autodiff_hess(backend, cfun, cargs, layout):
    """trust-constr's ``hess(x, v)``: a LinearOperator of HVPs of ``v . c(x)``."""
    def lagrangian(tree, v, *a):
        return _vdot(backend, v, cfun(tree, *a))

    linearize = backend.linearize_grad(lagrangian, layout)
    if linearize is None:
        return None
    n = layout.n

    def hess(x, v, _keep=lagrangian):  # a backend may hold fun weakly: keep it alive
        hvp = linearize(x, (np.asarray(v, dtype=np.float64),) + cargs)
        return LinearOperator((n, n), matvec=hvp, dtype=np.float64)

    return hess


def _size(c: Any) -> int:
    """Elements in a constraint value: a tensor's (from its shape, also while traced) or a sequence's."""
    if isinstance(c, (list, tuple)):
        return sum(_size(item) for item in c)
    return math.prod(int(d) for d in getattr(c, "shape", ()))


def _vdot(backend, v: np.ndarray, c: Any) -> Any:
    """``v . c`` in the framework, for a value that may be a (nested) list or tuple of tensors.

    A sequence counts as its items raveled and concatenated, as SciPy sees it.
    """
    if not isinstance(c, (list, tuple)):
        return backend.vdot(v, c)
    total, start = 0.0, 0
    for item in c:
        size = _size(item)
        total = total + _vdot(backend, v[start:start + size], item)
        start += size
    return total


def _flat_side(side):
    arr = np.asarray(side, dtype=np.float64)
    return arr.reshape(-1) if arr.ndim > 1 else arr


def make_constraints(constraints: Any, tree_of: Callable, backend, layout: Layout, is_leaf,
                     method: str = "") -> list:
    """Translate the user's constraints (one or a sequence) to SciPy's flat forms."""
    if constraints is None:
        return []
    if isinstance(constraints, (Mapping, LinearConstraint, NonlinearConstraint)):
        constraints = [constraints]
    return [
        _translate_one(con, tree_of, backend, layout, is_leaf, i, method)
        for i, con in enumerate(constraints)
    ]
