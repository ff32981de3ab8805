"""The translation between a pytree problem and SciPy's flat one.

Every entry point (``minimize``, ``least_squares``, ``root``) builds one
:class:`Problem` from the user's ``x0`` and then talks to SciPy in flat
float64 vectors only: ``Problem`` owns the layout, the starting vector, the
flat <-> pytree conversions of points and derivatives, the bounds and
constraints translation, the iteration hook and the result building.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult
from scipy.sparse import issparse
from scipy.sparse.linalg import LinearOperator

from .backend import Backend
from .bounds import make_bounds
from .callbacks import IterationHook
from .constraints import flat_jacobian, flat_vector, make_constraints
from .gradients import flat_gradient
from .objective import FLOAT64
from .tree import Layout, flatten_with_paths, format_path

_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0**-7,
        "float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def _dtype_name(dtype: Any) -> str:
    """'float32' from a NumPy, torch, TensorFlow or JAX dtype."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


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
    if np.isfinite(x.dot(x)):  # no inf or NaN anywhere (the sum of squares overflows only near 1e154)
        return
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"x0 has a non-finite value ({x[i]}) in {layout.path_of_index(i)}")


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


class Problem:
    """One pytree problem as SciPy sees it.

    Parameters
    ----------
    backend : Backend
        The framework's conversions and derivative hooks.
    x0 : pytree
        The user's starting point (never modified).

    Attributes
    ----------
    x0 : pytree
        x0 as the backend reads it (:meth:`Backend.prepare_x0`).
    layout : Layout
        Where each leaf lives in the flat vector.
    x_start : np.ndarray
        The flat float64 starting vector (a new array).
    """

    def __init__(self, backend: Backend, x0: Any):
        self.backend = backend
        self.x0 = backend.prepare_x0(x0)
        self.layout, leaves = build_layout(backend, self.x0)
        self.x_start = backend.to_flat(leaves, self.layout)
        _check_finite(self.x_start, self.layout)
        self._passes_through = self.scipy_semantics and self.layout.info == np.float64

    @property
    def n(self) -> int:
        return self.layout.n

    @property
    def is_flat(self) -> bool:
        """Whether x0 is one 1-d tensor: SciPy's own case, where flat forms pass through."""
        layout = self.layout
        return len(layout.shapes) == 1 and layout.shapes[0] == (layout.n,) and not layout.keys[0]

    @property
    def scipy_semantics(self) -> bool:
        """Whether this is SciPy's own case (a flat ndarray x0 in the NumPy drop-in), which behaves as SciPy does."""
        return self.backend.scipy_dropin and self.is_flat

    # ---- points and derivatives ------------------------------------------

    def tree_of(self, x: np.ndarray, requires_grad: bool = False) -> Any:
        """A flat vector as a pytree like x0 (new leaves: x0's dtypes and device)."""
        return self.layout.unflatten(self.backend.from_flat(x, self.layout, requires_grad))

    def tree_at(self, x: np.ndarray, requires_grad: bool = False) -> Any:
        """The pytree an evaluation hands ``fun`` at SciPy's point ``x``.

        SciPy gives every ``fun``/``jac`` call its own copy of the point; for
        x0 one float64 NumPy vector (SciPy's own case) that copy is passed on
        as SciPy passes it, otherwise this is :meth:`tree_of`.
        """
        if self._passes_through and type(x) is np.ndarray and x.dtype == np.float64:
            return x
        return self.tree_of(x, requires_grad)

    def flat(self, tree: Any, what: str) -> np.ndarray:
        """A gradient-like pytree (or SciPy's flat vector) as one flat float64 vector.

        In SciPy's own case (see :meth:`tree_at`) a float64 vector of x0's
        shape is taken as SciPy takes it, without a copy.
        """
        if (self._passes_through and type(tree) is np.ndarray and tree.dtype is FLOAT64
                and tree.shape == self.layout.shapes[0]):
            return tree
        return flat_gradient(self.backend, self.layout, tree, self.backend.is_leaf, what)

    def flat_jacobian(self, jac: Any, what: str) -> np.ndarray:
        """A dense ``(m, n)`` Jacobian or a pytree of ``(m, *leaf.shape)`` blocks, as ``(m, n)``."""
        return flat_jacobian(self.backend, self.layout, jac, self.backend.is_leaf, what)

    def scipy_jacobian(self, jac: Any, what: str) -> Any:
        """A user Jacobian as SciPy takes it: ``(m, n)`` over the flat vector.

        Sparse matrices and ``LinearOperator`` pass through; for x0 one
        tensor, so does any array-like (SciPy checks its shape); a pytree
        like x0 of ``(m, *leaf.shape)`` blocks is joined.
        """
        if isinstance(jac, LinearOperator) or issparse(jac):
            return jac
        if len(self.layout.keys) == 1 and not self.layout.keys[0]:
            arr = np.asarray(self.backend.to_numpy(jac))
            return arr if self.is_flat else self.flat_jacobian(arr, what)
        return self.flat_jacobian(jac, what)

    def flat_values(self, value: Any) -> np.ndarray:
        """A tensor of any shape as a 1-d float64 array."""
        return flat_vector(self.backend, value)

    def eager_value(self, fun: Callable) -> EagerValue:
        """``fun`` (scalar-valued) as ``value(x, args) -> float``, called eagerly."""
        return EagerValue(self.backend, self.layout, fun)

    def fd_rel_step(self, jac: Any) -> float | None:
        """A finite-difference step the leaves' precision can resolve, or None for float64.

        SciPy's default relative step (sqrt of float64 eps, ~1.5e-8) is below
        float32's eps: x + h rounds back to x in the leaf's dtype and the
        difference quotient is zero. Use the same rule with the leaves' eps.
        """
        eps = max(_EPS.get(_dtype_name(d), _EPS["float64"]) for d in self.layout.dtypes)
        if eps <= _EPS["float64"]:
            return None
        return eps ** (1 / 3) if jac == "3-point" else eps**0.5

    # ---- bounds and constraints ------------------------------------------

    def bounds(self, bounds: Any, lb_dict: Any = None, ub_dict: Any = None):
        """The user's bounds (any accepted form) as one flat ``Bounds``, or None."""
        return make_bounds(bounds, lb_dict, ub_dict, self.x0, self.layout, self.backend, self.backend.is_leaf)

    def constraints(self, constraints: Any, method: str) -> list:
        """The user's constraints as SciPy's flat forms."""
        return make_constraints(constraints, self.tree_of, self.backend, self.layout,
                                self.backend.is_leaf, method)

    # ---- iterations and the result ---------------------------------------

    def hook(self, method: str, callback: Callable | None, objective: Any, **kwargs: Any) -> IterationHook:
        """The per-iteration hook (history, progress bar, user callback, time limit)."""
        return IterationHook(method, callback, self.tree_of, objective, **kwargs)

    def _tree_of_result(self, flat: Any) -> Any:
        """A point of SciPy's result as a pytree like x0 (SciPy's own array in SciPy's own case)."""
        if (self._passes_through and type(flat) is np.ndarray and flat.dtype is FLOAT64
                and flat.shape == self.layout.shapes[0] and flat.flags.writeable):
            return flat  # as SciPy returns it; the driver's read-only memos are copied below
        return self.tree_of(np.asarray(flat, dtype=np.float64).reshape(-1))

    def result(self, res: OptimizeResult, grad_key: str | None = "jac",
               hook: IterationHook | None = None) -> OptimizeResult:
        """SciPy's result with ``x`` (and the gradient under ``grad_key``) as pytrees like x0."""
        out = OptimizeResult(res)
        if "x" not in res:  # a custom method may return anything
            return out
        out.x = self._tree_of_result(res.x)
        if "best_x" in res:  # see the driver's _best_if_not_finite
            out.best_x = self._tree_of_result(res.best_x)
        g = res.get(grad_key) if grad_key is not None else None
        if g is not None and np.size(g) == self.n:
            # Always a new array: SciPy's may be the one fun returned (and writes into again).
            out[grad_key] = self.tree_of(np.asarray(g, dtype=np.float64).reshape(-1))
        if hook is not None:
            if hook.stopped_by_user:
                # COBYQA reports success (with its own status and message) when
                # the callback stops it; a stopped run is not a success.
                out.success = False
            if hook.record:
                out.history = hook.history
        return out
