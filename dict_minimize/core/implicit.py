"""``argmin``: the minimizer ``x*(theta)`` as a differentiable function of the problem's tensors.

The forward pass is the driver's ``minimize``. The backward pass is the
implicit function theorem applied to the optimality conditions at ``x*``:

- free variables ``F`` (not at an active bound), active bound variables
  ``A`` (``x_A = b_A(theta)``) and active constraint rows ``c(x, theta) = 0``
  with Jacobian ``J`` and multipliers ``lam`` (recovered by least squares,
  ``J_F' lam = -grad_F f``);
- the Hessian of the Lagrangian ``H = hess f + sum lam_k hess c_k``, by the
  backend's Hessian-vector products (never a dense matrix);
- for a cotangent ``v`` of ``x*``, solve ``H_FF u_F + J_F' w = v_F``,
  ``J_F u_F = 0`` (conjugate gradients when no constraint is active,
  MINRES on the symmetric KKT matrix otherwise; no normal equations), with
  ``u_A = 0``, then ``r_A = v_A - (H u)_A - J_A' w``;
- the cotangent of theta is ``-d/dtheta [u . grad_x L(x*, theta)]
  - d/dtheta [w . c(x*, theta)] + r_A . d b_A/dtheta``.

The mixed derivative ``d/dtheta [u . grad_x L]`` is the theta block of the
Hessian-vector product of ``L`` over the joint pytree ``(x, theta)``, so
it comes from the backend's existing :meth:`~Backend.linearize_grad`. The
framework pieces are two hooks: :meth:`~Backend.is_parameter` (which
tensors carry gradients) and :meth:`~Backend.implicit_function` (the
framework's custom-gradient rule); NumPy has neither, so it has no ``argmin``.
"""

from __future__ import annotations

import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import optree
from scipy.optimize import Bounds, LinearConstraint, NonlinearConstraint
from scipy.sparse.linalg import LinearOperator, cg, minres

from .backend import Backend
from .bounds import make_bounds
from .driver import minimize as driver_minimize
from .tree import NAMESPACE, Layout, flatten_with_paths, format_path

__all__ = ["ArgminError", "ArgminWarning", "argmin", "bind_argmin"]


class ArgminWarning(RuntimeWarning):
    """The forward solve or the backward linear solve did not converge: the gradient is approximate."""


class ArgminError(RuntimeError):
    """``strict=True``: the forward solve or the backward linear solve did not converge."""


#: Keywords of ``argmin`` itself (everything else goes to ``minimize``).
ARGMIN_OPTIONS = ("return_result", "ridge", "strict", "linear_tol", "linear_maxiter", "active_tol")
#: Keywords of ``minimize`` that make no sense for a differentiable solution.
REFUSED = ("batches", "epochs")


# ---- where the differentiable tensors are --------------------------------


def _flatten(backend: Backend, tree: Any) -> tuple[list, Any]:
    _, leaves, spec = flatten_with_paths(tree, backend.is_leaf)
    return leaves, spec


def _unflatten(spec: Any, leaves: list) -> Any:
    return optree.tree_unflatten(spec, list(leaves))


def _unwrap(side: Any) -> Any:
    """``Bounds`` stores a pytree ``lb`` as a one-element object array; get the pytree back."""
    if isinstance(side, np.ndarray) and side.dtype == object and side.size == 1:
        return side.reshape(-1)[0]
    return side


def _constraint_list(constraints: Any) -> list:
    if constraints is None:
        return []
    if isinstance(constraints, (Mapping, LinearConstraint, NonlinearConstraint)):
        return [constraints]
    return list(constraints)


@dataclass
class _Problem:
    """The problem's pytrees (x0, args, each constraint's args, the bounds) as one leaf list.

    ``inputs`` are the leaves the backend calls parameters (plus x0's, so a
    traced x0 reaches the forward solve as a value); :meth:`rebuild` puts
    new values for them back.
    """

    leaves: list
    spec: Any
    at: list  # flat positions of the inputs
    constraints: list  # the user's constraint objects (args swapped in by rebuild)

    @classmethod
    def build(cls, backend, x0, args, constraints, bounds, lb_dict, ub_dict) -> "_Problem":
        cons = _constraint_list(constraints)
        con_args = [tuple(c.get("args", ())) if isinstance(c, Mapping) else () for c in cons]
        if isinstance(bounds, Bounds):
            bound_part = ("Bounds", _unwrap(bounds.lb), _unwrap(bounds.ub), bounds.keep_feasible)
        else:
            bound_part = ("plain", bounds)
        tree = (x0, args, con_args, bound_part, lb_dict, ub_dict)
        leaves, spec = _flatten(backend, tree)
        # x0's parameters are inputs too (with no gradient): a traced x0 then
        # reaches the forward solve as a value.
        at = [i for i in range(len(leaves)) if backend.is_parameter(leaves[i])]
        return cls(leaves, spec, at, cons)

    @property
    def inputs(self) -> list:
        return [self.leaves[i] for i in self.at]

    def rebuild(self, values: list) -> tuple:
        """(x0, args, constraints, bounds, lb_dict, ub_dict) with ``values`` in the inputs' places."""
        leaves = list(self.leaves)
        for i, v in zip(self.at, values):
            leaves[i] = v
        x0, args, con_args, bound_part, lb_dict, ub_dict = _unflatten(self.spec, leaves)
        cons = [dict(c, args=a) if isinstance(c, Mapping) else c for c, a in zip(self.constraints, con_args)]
        if bound_part[0] == "Bounds":
            bounds = Bounds(bound_part[1], bound_part[2], bound_part[3])
        else:
            bounds = bound_part[1]
        return x0, args, cons, bounds, lb_dict, ub_dict

    def groups(self) -> dict:
        """Per group ('args', ('con', k), 'bounds'): the indices into :attr:`inputs` and,
        under 'at', their leaf positions within the group's own pytree (args, a constraint's args)."""
        children = optree.treespec_children(self.spec)
        starts = np.cumsum([0] + [c.num_leaves for c in children])
        con_children = optree.treespec_children(children[2])
        con_starts = starts[2] + np.cumsum([0] + [c.num_leaves for c in con_children])
        out: dict = {"args": [], "bounds": [], "at": {"args": []}}
        for k in range(len(con_children)):
            out[("con", k)] = []
            out["at"][("con", k)] = []
        for j, i in enumerate(self.at):
            if i < starts[1]:
                continue  # x0: no gradient
            if i < starts[2]:
                out["args"].append(j)
                out["at"]["args"].append(i - starts[1])
            elif i < starts[3]:
                k = int(np.searchsorted(con_starts, i, side="right")) - 1
                out[("con", k)].append(j)
                out["at"][("con", k)].append(i - con_starts[k])
            else:
                out["bounds"].append(j)
        return out


def _layout(backend: Backend, tree: Any) -> tuple[Layout, list]:
    """The layout of a pytree of framework leaves (as the driver builds x0's)."""
    paths, leaves, spec = flatten_with_paths(tree, backend.is_leaf)
    names = [format_path(p) for p in paths]
    shapes, dtypes = zip(*(backend.leaf_shape_dtype(v, name) for v, name in zip(leaves, names)))
    return Layout.build(spec, names, shapes, dtypes, backend.layout_info(leaves, dtypes), paths), leaves


# ---- the backward pass ----------------------------------------------------


@dataclass
class _Settings:
    ridge: float = 0.0
    strict: bool = False
    linear_tol: float | None = None
    linear_maxiter: int | None = None
    active_tol: float = 1e-6


def _check_settings(s: _Settings) -> None:
    """Clear errors naming the option, before any solve."""
    def number(name, value, low_ok):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                value >= 0 if low_ok else value > 0):
            raise ValueError(f"{name} must be a {'non-negative' if low_ok else 'positive'} number, got {value!r}")

    number("ridge", s.ridge, True)
    number("active_tol", s.active_tol, True)
    if s.linear_tol is not None:
        number("linear_tol", s.linear_tol, False)
    if s.linear_maxiter is not None and (
            isinstance(s.linear_maxiter, bool) or not isinstance(s.linear_maxiter, numbers.Integral)
            or s.linear_maxiter < 1):
        raise ValueError(f"linear_maxiter must be a positive integer, got {s.linear_maxiter!r}")


def _complain(message: str, strict: bool) -> None:
    if strict:
        raise ArgminError(message)
    warnings.warn(message, ArgminWarning, stacklevel=4)


#: Wrappers of user functions, kept per function so that a backend that
#: compiles (and caches compiled code by the function's identity) compiles each once.
_WRAPPERS: "weakref.WeakKeyDictionary[Callable, dict]" = weakref.WeakKeyDictionary()


def _wrapper(fun: Callable, key: tuple, make: Callable[[Callable[[], Callable]], Callable]) -> Callable:
    """``make(fun_ref)``, cached per ``fun`` (held weakly) and ``key``; uncached without a weakref."""
    try:
        ref = weakref.ref(fun)
        per_fun = _WRAPPERS.setdefault(fun, {})
    except TypeError:
        return make(lambda: fun)
    if key not in per_fun:
        per_fun[key] = make(ref)
    return per_fun[key]


def _joint_function(backend, fun: Callable, spec: Any, n_leaves: int, at: list, dot: bool = False):
    """``joint((x, thetas), *rest)``: ``fun(x, *args)`` with the parameter leaves of args from ``thetas``.

    ``dot``: the value is ``backend.vdot(rest[0], fun(...))`` (a constraint's
    ``v . c``), the other leaves of args follow in ``rest``.
    """
    at_t = tuple(at)

    def make(fun_ref):
        at_set = set(at_t)

        def joint(z, *rest):
            x, thetas = z
            v, others = (rest[0], rest[1:]) if dot else (None, rest)
            it_t, it_o = iter(thetas), iter(others)
            full = [next(it_t) if i in at_set else next(it_o) for i in range(n_leaves)]
            value = fun_ref()(x, *_unflatten(spec, full))
            return backend.vdot(v, value) if dot else value

        return joint

    return _wrapper(fun, ("joint", id(backend), spec, n_leaves, at_t, dot), make)


def _lagrangian(backend, cfun: Callable) -> Callable:
    """``lagrangian(tree, v, *args) = v . cfun(tree, *args)``, for constraint Hessian-vector products."""

    def make(fun_ref):
        def lagrangian(tree, v, *a):
            return backend.vdot(v, fun_ref()(tree, *a))

        return lagrangian

    return _wrapper(cfun, ("lagrangian", id(backend)), make)


class Backward:
    """``v -> v' dx*/dtheta`` at one solution; built lazily at the first cotangent, reused after.

    ``stats`` counts the work (Hessian-vector products, solver iterations).
    """

    def __init__(self, backend, fun, layout, x, args, cons, scipy_bounds, problem, inputs, settings,
                 bound_sources, res):
        self.backend, self.fun, self.layout, self.x = backend, fun, layout, x
        self.args, self.cons, self.scipy_bounds = args, cons, scipy_bounds
        self.problem, self.inputs, self.settings = problem, inputs, settings
        # callable -> (lb_src, ub_src): per flat index, the (input, element) its bound came from
        self.bound_sources = bound_sources
        self.res = res
        self.groups = problem.groups()
        self.stats = {"backward_calls": 0, "hvps": 0, "solver": None, "solver_iterations": 0,
                      "active_bounds": 0, "active_constraints": 0}
        self._ready = False
        self._keep: list = []  # wrappers a backend may hold weakly
        self._joint_hvps: dict = {}  # group -> (hvp at (x*, theta), joint layout, joint point)

    # -- set-up (once) --
    def _setup(self) -> None:
        b, lay, x, s = self.backend, self.layout, self.x, self.settings
        n = lay.n
        vg = b.value_and_grad(self.fun, lay)
        lin = b.linearize_grad(self.fun, lay)
        if vg is None or lin is None:
            raise TypeError(f"the {b.name} backend has no autodiff: argmin needs Hessian-vector products")
        _, g = vg(x, self.args)
        hvps = [lin(x, self.args)]
        # Active constraint rows and their Jacobians.
        J_rows, self.con_rows = [], []
        self.con_funs = []  # per constraint: (cfun, cargs, raveled size) or None for linear
        for k, con in enumerate(self.cons):
            c, J, lo, hi, cfun, cargs = self._constraint_at(con, x)
            with np.errstate(invalid="ignore"):
                tol_lo = s.active_tol * (1 + np.abs(lo))
                tol_hi = s.active_tol * (1 + np.abs(hi))
                active = (np.isfinite(lo) & (np.abs(c - lo) <= tol_lo)) | (
                    np.isfinite(hi) & (np.abs(c - hi) <= tol_hi))
            rows = np.flatnonzero(active)
            self.con_rows.append(rows)
            self.con_funs.append((cfun, cargs, c.size))
            J_rows.append(J[rows])
        self.J = np.vstack(J_rows) if J_rows else np.zeros((0, n))
        m = self.J.shape[0]
        # Bounds: at the bound and the Lagrangian's gradient pushes out (or exactly at it).
        at_lb = at_ub = np.zeros(n, bool)
        if self.scipy_bounds is not None:
            lb = np.broadcast_to(np.asarray(self.scipy_bounds.lb, np.float64).reshape(-1), (n,))
            ub = np.broadcast_to(np.asarray(self.scipy_bounds.ub, np.float64).reshape(-1), (n,))
            with np.errstate(invalid="ignore"):
                near_lb = np.isfinite(lb) & (x - lb <= s.active_tol * (1 + np.abs(lb)))
                near_ub = np.isfinite(ub) & (ub - x <= s.active_tol * (1 + np.abs(ub)))
            g_L = g
            if self.J.shape[0]:  # the constraints' share, with multipliers from the variables off the bounds
                off = ~(near_lb | near_ub)
                g_L = g + self.J.T @ np.linalg.lstsq(self.J[:, off].T, -g[off], rcond=None)[0]
            at_lb = near_lb & ((g_L >= 0) | (x <= lb))
            at_ub = near_ub & ((g_L <= 0) | (x >= ub)) & ~at_lb
        self.at_lb, self.at_ub = at_lb, at_ub
        self.free = ~(at_lb | at_ub)
        F = np.flatnonzero(self.free)
        # Multipliers by least squares on the free variables: J_F' lam = -g_F.
        lam = np.zeros(m)
        if m:
            lam = np.linalg.lstsq(self.J[:, F].T, -g[F], rcond=None)[0]
        self.lam = lam
        start = 0
        self.con_lam = []
        for k, (cfun, cargs, size) in enumerate(self.con_funs):
            rows = self.con_rows[k]
            full = np.zeros(size)
            full[rows] = lam[start:start + rows.size]
            start += rows.size
            self.con_lam.append(full)
            if cfun is not None and rows.size:
                hvps.append(self._constraint_hvp(cfun, cargs, full, x))
        self._hvps = hvps
        self.stats.update(active_bounds=int((~self.free).sum()), active_constraints=int(m))
        self._ready = True

    def _constraint_at(self, con, x):
        b, lay = self.backend, self.layout
        if isinstance(con, LinearConstraint):
            A = con.A.toarray() if hasattr(con.A, "toarray") else np.atleast_2d(np.asarray(con.A, np.float64))
            c = A @ x
            lo = np.broadcast_to(np.asarray(con.lb, np.float64).reshape(-1), c.shape)
            hi = np.broadcast_to(np.asarray(con.ub, np.float64).reshape(-1), c.shape)
            return c, A, lo, hi, None, ()
        if isinstance(con, NonlinearConstraint):
            cfun, cargs = con.fun, ()
        else:
            cfun, cargs = con["fun"], tuple(con.get("args", ()))
        vj = b.value_and_jac(cfun, lay)
        c, J = vj(x, cargs)
        if isinstance(con, NonlinearConstraint):
            lo = np.broadcast_to(np.asarray(con.lb, np.float64).reshape(-1), c.shape)
            hi = np.broadcast_to(np.asarray(con.ub, np.float64).reshape(-1), c.shape)
        elif con["type"] == "eq":
            lo = hi = np.zeros(c.shape)
        else:  # SciPy's 'ineq': c(x) >= 0
            lo, hi = np.zeros(c.shape), np.full(c.shape, np.inf)
        return c, J, lo, hi, cfun, cargs

    def _constraint_hvp(self, cfun, cargs, lam, x):
        lagrangian = _lagrangian(self.backend, cfun)
        self._keep.append(lagrangian)  # the cache holds it only while cfun lives
        return self.backend.linearize_grad(lagrangian, self.layout)(x, (lam,) + tuple(cargs))

    def _hess(self, p: np.ndarray) -> np.ndarray:
        self.stats["hvps"] += 1
        out = self._hvps[0](p)
        for h in self._hvps[1:]:
            out = out + h(p)
        return out

    # -- one cotangent --
    def __call__(self, cotangents: list, wanted: list | None = None) -> list:
        """Per input, its cotangent (NumPy, shaped like it) or None; ``wanted[j]`` false: skip input j."""
        groups = self._groups_for(wanted)
        if not any(groups[g] for g in groups if g != "at"):
            return [None] * len(self.inputs)  # only x0 (or nothing) is differentiated
        if not self._ready:
            self._setup()
        self.stats["backward_calls"] += 1
        n, s = self.layout.n, self.settings
        v = np.concatenate([np.asarray(c, np.float64).reshape(-1) for c in cotangents])
        if v.size != n:
            raise ValueError(f"argmin's backward got a cotangent of {v.size} elements; x has {n}")
        out: list = [None] * len(self.inputs)
        if not np.any(v):
            return out
        F = np.flatnonzero(self.free)
        m = self.J.shape[0]
        u = np.zeros(n)
        w = np.zeros(m)
        if F.size:
            u_F, w = self._solve(v[F], F, m)
            u[F] = u_F
        if groups["args"]:
            theta = self._mixed(u, groups["at"]["args"])
            self._put(out, groups["args"], 0.0 - theta)  # 0.0 - : no -0.0
        start = 0
        for k, (cfun, cargs, size) in enumerate(self.con_funs):
            rows = self.con_rows[k]
            w_full = np.zeros(size)
            w_full[rows] = w[start:start + rows.size]
            start += rows.size
            idx = groups.get(("con", k), [])
            if cfun is None or not idx or not rows.size:
                continue
            at = groups["at"][("con", k)]
            theta = self._constraint_theta(k, cfun, cargs, at, u, self.con_lam[k], w_full)
            self._put(out, idx, 0.0 - theta)
        if groups["bounds"] and not np.all(self.free):
            r = v - self._hess(u) - self.J.T @ w  # only its active entries are used
            self._bounds_cotangent(out, groups["bounds"], r)
        return out

    def _groups_for(self, wanted: list | None) -> dict:
        """:attr:`groups` without the inputs nobody differentiates."""
        if wanted is None or all(wanted):
            return self.groups
        out: dict = {"at": {}}
        for g, idx in self.groups.items():
            if g == "at":
                continue
            keep = [i for i, j in enumerate(idx) if wanted[j]]
            out[g] = [idx[i] for i in keep]
            if g in self.groups["at"]:
                out["at"][g] = [self.groups["at"][g][i] for i in keep]
        return out

    def _solve(self, v_F, F, m):
        s, n = self.settings, self.layout.n
        rtol = s.linear_tol if s.linear_tol is not None else _default_rtol(self.layout)
        nF = F.size
        J_F = self.J[:, F]

        def h_FF(p):
            full = np.zeros(n)
            full[F] = p
            return self._hess(full)[F] + s.ridge * p

        iterations = [0]

        def count(_):
            iterations[0] += 1

        if m == 0:
            A = LinearOperator((nF, nF), matvec=h_FF, dtype=np.float64)
            sol, info = cg(A, v_F, rtol=rtol, atol=0.0, maxiter=s.linear_maxiter, callback=count)
            solver, u_F, w = "cg", sol, np.zeros(0)
        else:
            def kkt(p):
                a, b = p[:nF], p[nF:]
                return np.concatenate([h_FF(a) + J_F.T @ b, J_F @ a])

            A = LinearOperator((nF + m, nF + m), matvec=kkt, dtype=np.float64)
            rhs = np.concatenate([v_F, np.zeros(m)])
            sol, info = minres(A, rhs, rtol=rtol, maxiter=s.linear_maxiter, callback=count)
            solver, u_F, w = "minres", sol[:nF], sol[nF:]
        self.stats["solver"] = solver
        self.stats["solver_iterations"] += iterations[0]
        if not (np.all(np.isfinite(u_F)) and np.all(np.isfinite(w))):
            raise ArgminError(
                f"argmin's backward {solver} solve produced non-finite values (a singular or "
                "indefinite Hessian at x*?); pass ridge= to regularize it"
            )
        if info != 0:
            _complain(
                f"argmin's backward {solver} solve did not converge to rtol={rtol:g} in "
                f"{iterations[0]} iterations (info={info}): the gradient is approximate; raise "
                "linear_maxiter=, loosen linear_tol= or pass ridge= for a singular Hessian",
                s.strict,
            )
        return u_F, w

    def _joint(self, group, joint_fun, thetas, rest):
        """The theta block of the joint Hessian-vector product at (x*, thetas) along (u, 0), per group.

        Returns ``(theta_hvp, joint_layout, z)``; the linearization is built once per group.
        """
        if group not in self._joint_hvps:
            b = self.backend
            self._keep.append(joint_fun)
            x_tree = self.layout.unflatten(b.from_flat(self.x, self.layout))
            jl, jleaves = _layout(b, (x_tree, list(thetas)))
            z = b.to_flat(jleaves, jl)
            hvp = b.linearize_grad(joint_fun, jl)(z, tuple(rest))
            n = self.layout.n

            def theta_hvp(u):
                self.stats["hvps"] += 1
                return hvp(np.concatenate([u, np.zeros(jl.n - n)]))[n:]

            self._joint_hvps[group] = (theta_hvp, jl, z)
        return self._joint_hvps[group]

    def _mixed(self, u, at):
        b = self.backend
        leaves, spec = _flatten(b, self.args)
        thetas = [leaves[i] for i in at]
        others = [v for i, v in enumerate(leaves) if i not in set(at)]
        joint = _joint_function(b, self.fun, spec, len(leaves), at)
        theta_hvp, _, _ = self._joint(("args", tuple(at)), joint, thetas, others)
        return theta_hvp(u)

    def _constraint_theta(self, k, cfun, cargs, at, u, lam, w_full):
        b = self.backend
        leaves, spec = _flatten(b, tuple(cargs))
        thetas = [leaves[i] for i in at]
        others = [v for i, v in enumerate(leaves) if i not in set(at)]
        joint = _joint_function(b, cfun, spec, len(leaves), at, dot=True)
        theta_hvp, jl, z = self._joint(("con", k, tuple(at)), joint, thetas, [lam] + others)
        _, grad = b.value_and_grad(joint, jl)(z, (w_full,) + tuple(others))
        return theta_hvp(u) + grad[self.layout.n:]

    def _put(self, out, idx, flat):
        """Split a flat theta cotangent over the inputs ``idx`` (in order), adding to what is there."""
        start = 0
        for j in idx:
            shape = tuple(self.inputs[j].shape)  # framework tensors all have .shape
            size = int(np.prod(shape, dtype=np.int64))
            piece = flat[start:start + size].reshape(shape)
            start += size
            out[j] = piece if out[j] is None else out[j] + piece

    def _bounds_cotangent(self, out, idx, r):
        lb_src, ub_src = self.bound_sources()
        for j in idx:
            shape = tuple(self.inputs[j].shape)  # framework tensors all have .shape
            acc = np.zeros(int(np.prod(shape, dtype=np.int64)))
            for src, active in ((lb_src, self.at_lb), (ub_src, self.at_ub)):
                hit = active & (src[:, 0] == j)
                np.add.at(acc, src[hit, 1], r[hit])
            piece = acc.reshape(shape)
            out[j] = piece if out[j] is None else out[j] + piece


def _default_rtol(layout: Layout) -> float:
    """1e-10 in float64; what lower-precision Hessian-vector products can reach otherwise."""
    names = {getattr(d, "name", str(d)).rsplit(".", 1)[-1] for d in layout.dtypes}
    return 1e-10 if names <= {"float64"} else 1e-5


def _bound_sources(backend, problem, values, x0, layout) -> tuple[np.ndarray, np.ndarray]:
    """For each flat index, which bound input (and which of its elements) set its lb and ub.

    Found by moving one input at a time by ``-(1 + element index)`` (lower
    bounds may always go down; an upper bound that then falls below its
    lower one is moved up instead) and reading which flat bounds changed by
    how much: bounds are placed and broadcast, never mixed, so this is exact.
    """
    n = layout.n
    lb_src = np.full((n, 2), -1, np.int64)
    ub_src = np.full((n, 2), -1, np.int64)
    groups = problem.groups()

    def flat_bounds(vals):
        _, _, _, bounds, lb_dict, ub_dict = problem.rebuild(vals)
        b = make_bounds(bounds, lb_dict, ub_dict, x0, layout, backend, backend.is_leaf)
        return (np.broadcast_to(np.asarray(b.lb, np.float64).reshape(-1), (n,)),
                np.broadcast_to(np.asarray(b.ub, np.float64).reshape(-1), (n,)))

    base = [np.asarray(backend.to_numpy(v), np.float64) for v in values]
    lb0, ub0 = flat_bounds(base)
    for j in groups["bounds"]:
        step = 1.0 + np.arange(base[j].size, dtype=np.float64).reshape(base[j].shape)
        for sign in (-1.0, 1.0):
            moved = list(base)
            moved[j] = base[j] + sign * step
            try:
                lb1, ub1 = flat_bounds(moved)
                break
            except ValueError:
                continue
        else:  # pragma: no cover - one of the two directions is always valid
            continue
        for src, old, new in ((lb_src, lb0, lb1), (ub_src, ub0, ub1)):
            with np.errstate(invalid="ignore"):
                changed = np.flatnonzero(np.isfinite(old) & (new != old))
            src[changed, 0] = j
            src[changed, 1] = np.rint(sign * (new[changed] - old[changed])).astype(np.int64) - 1
    return lb_src, ub_src


# ---- the entry point ------------------------------------------------------


def argmin(
    backend: Backend,
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: str | Callable | None = None,
    jac: Any = None,
    bounds: Any = None,
    constraints: Any = (),
    tol: float | None = None,
    options: dict | None = None,
    **extras: Any,
) -> Any:
    """The minimizer of ``fun`` over ``x0``, differentiable in the parameters; see the backends' ``argmin``."""
    settings = _Settings()
    for key in ARGMIN_OPTIONS[1:]:
        if key in extras:
            setattr(settings, key, extras.pop(key))
    return_result = bool(extras.pop("return_result", False))
    for key in REFUSED:
        if key in extras:
            raise TypeError(f"argmin does not take {key}= (the stochastic mode has no fixed minimizer)")
    _check_settings(settings)
    if not isinstance(args, tuple):
        args = (args,)
    lb_dict, ub_dict = extras.pop("lb_dict", None), extras.pop("ub_dict", None)
    problem = _Problem.build(backend, x0, args, constraints, bounds, lb_dict, ub_dict)
    state: dict = {}

    def forward(values: list) -> list:
        x0_c, args_c, cons_c, bounds_c, lb_c, ub_c = problem.rebuild(values)
        res = driver_minimize(
            backend, fun, x0_c, args=args_c, method=method, jac=jac, bounds=bounds_c,
            constraints=cons_c, tol=tol, options=options, lb_dict=lb_c, ub_dict=ub_c, **extras,
        )
        if not res.success:
            _complain(
                f"argmin's forward solve did not converge ({res.message!s}): x* and its gradient "
                "are approximate; tighten tol= or raise options={'maxiter': ...}",
                settings.strict,
            )
        layout, leaves = _layout(backend, res.x)
        x = backend.to_flat(leaves, layout)
        scipy_bounds = None
        if bounds_c is not None or lb_c is not None or ub_c is not None:
            scipy_bounds = make_bounds(bounds_c, lb_c, ub_c, x0_c, layout, backend, backend.is_leaf)
        sources: list = []

        def bound_sources():
            if not sources:
                sources.extend(_bound_sources(backend, problem, values, x0_c, layout))
            return sources

        bw = Backward(backend, fun, layout, x, args_c, cons_c, scipy_bounds, problem, values, settings,
                      bound_sources, res)
        res.implicit = bw.stats
        state.update(res=res, backward=bw, layout=layout)
        return leaves

    def backward(cotangents: list, wanted: list | None = None) -> list:
        return state["backward"](cotangents, wanted)

    apply = backend.implicit_function(forward, backward)
    if apply is None:
        raise TypeError(f"the {backend.name} backend has no autodiff, so no argmin")
    outputs = apply(problem.inputs)
    x = state["layout"].unflatten(list(outputs))
    return (x, state["res"]) if return_result else x


ARGMIN_DOC = """The minimizer ``x*`` of ``fun``, differentiable in the {tensors} of the problem.

Takes what :func:`minimize` takes and returns ``x*`` as a pytree like
``x0``. Its leaves are differentiable ({how}) with respect to every
{tensor} in ``args``, in a constraint's ``args`` and in ``bounds``, by the
implicit function theorem at ``x*``: the backward pass solves the
optimality conditions' linear system with Hessian-vector products
(conjugate gradients on the free variables; MINRES on the KKT system when
equality or active inequality constraints are present), then takes one
vector-Jacobian product with respect to the parameters. The solver is never
unrolled. ``x0`` gets no gradient (``x*`` does not depend on it at a
strict local minimum). Tensors a constraint or ``fun`` closes over get no
gradient either: pass them in ``args``.

Parameters
----------
fun, x0, args, method, jac, bounds, constraints, tol, options
    As in :func:`minimize`. Variables at an active bound have zero
    derivative with respect to ``fun``'s parameters and follow the bound
    itself when it is a {tensor} (``x_i* = lb_i``).
**extras
    :func:`minimize`'s keyword extras (``hess``, ``hessp``, ``callback``,
    ``max_time``, ``progress``, ``lb_dict``, ``ub_dict``, ``history``; not ``batches``)
    and argmin's own:

    ``return_result`` (bool, default False)
        Return ``(x, res)``: ``res`` is :func:`minimize`'s ``OptimizeResult``;
        ``res.implicit`` counts the backward work (``hvps``,
        ``solver_iterations``, ``backward_calls``, ``active_bounds``,
        ``active_constraints``).
    ``ridge`` (float, default 0)
        Adds ``ridge * I`` to the Hessian in the backward solve (for
        singular Hessians).
    ``strict`` (bool, default False)
        A forward or backward solve that does not converge raises
        :class:`~dict_minimize.core.implicit.ArgminError` instead of an
        :class:`~dict_minimize.core.implicit.ArgminWarning`.
    ``linear_tol`` (float), ``linear_maxiter`` (int)
        Relative tolerance (default 1e-10 in float64, 1e-5 otherwise) and
        iteration limit (SciPy's default) of the backward solve.
    ``active_tol`` (float, default 1e-6)
        A variable within ``active_tol * (1 + |bound|)`` of a bound, with
        the gradient pushing out, is at that bound; likewise for inequality
        constraints (any value within the tolerance is active).

Returns
-------
pytree like x0
    ``x*``, or ``(x*, res)`` with ``return_result=True``.

Examples
--------
{example}
"""


def bind_argmin(backend: Backend, module: str, **doc: str) -> Callable[..., Any]:
    """The public ``argmin`` of a backend module: ``minimize``'s signature, differentiable ``x*``.

    ``doc`` fills :data:`ARGMIN_DOC` (``tensors``, ``tensor``, ``how``, ``example``).
    """

    def argmin_(
        fun: Callable,
        x0: Any,
        args: tuple = (),
        method: str | Callable | None = None,
        jac: Any = None,
        bounds: Any = None,
        constraints: Any = (),
        tol: float | None = None,
        options: dict | None = None,
        **extras: Any,
    ) -> Any:
        return argmin(backend, fun, x0, args, method, jac, bounds, constraints, tol, options, **extras)

    argmin_.__name__ = argmin_.__qualname__ = "argmin"
    argmin_.__module__ = module
    argmin_.__doc__ = ARGMIN_DOC.format(**doc)
    return argmin_
