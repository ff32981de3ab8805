"""Data-parallel ``minimize``: every process runs SciPy in lockstep on identical iterates.

Each process (rank) calls ``minimize`` with the same ``x0`` and options and
its own shard of the data in ``args``. The global objective is the sum of
the ranks' values. Every evaluation computes the local value and gradient
(or Hessian-vector product) and sums them over the ranks in **one** fused
all-reduce of a float64 buffer::

    [value, gradient (n), status, check]        n + 3 floats, 8 (n + 3) bytes

so every rank receives bitwise the same numbers, and SciPy, a deterministic
function of those numbers, computes the same next point on every rank.

``status``
    A rank whose code raised contributes ``2**-rank``; rank 0 adds 4 when its
    clock passed ``max_time``. Every rank joins the all-reduce before it
    raises, so no rank waits in a collective another rank will not join:
    the failing rank re-raises its own exception, the others raise
    :class:`RankFailed` naming the lowest failing rank.
``check``
    The lockstep guard: a 40-bit integer hash of the point just evaluated
    (a wrapping sum of its bits, O(n) and memory-bound). Rank 0 contributes
    ``(size - 1) * hash``, the others ``-hash``: the sum is zero when every
    rank evaluated the same point (exactly, in integers below 2**53), and a
    drift raises :class:`LockstepError` on every rank at the first
    diverging evaluation. This costs 8 bytes per evaluation; the
    alternative, broadcasting x from rank 0, costs a second collective of
    8 n bytes (``benchmarks/distributed.py`` measures both).

Decisions that must be the same everywhere are made once: ``max_time`` on
rank 0's clock (it rides in ``status``); a ``StopIteration`` or an error
from a callback, which runs on one rank (``callback_rank``, 0 by default),
in a tiny all-reduce of 3 floats at the end of each iteration (only when
there is a callback).

The framework supplies only a :class:`Communicator` (a sum all-reduce of a
float64 NumPy buffer); everything else here is framework-agnostic and the
driver is unchanged: :class:`DistributedBackend` wraps a backend's
derivative hooks, and the user's ``fun``/``jac``/``hessp``/``hess`` where
the driver calls them eagerly.
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import HessianUpdateStrategy, OptimizeResult

from .backend import Backend
from .callbacks import callback_style
from .gradients import flat_gradient
from .objective import Halt

DISTRIBUTED_DOC = """distributed : None, True{kinds}, optional
    Data-parallel mode over {true}. Every
    process calls ``minimize`` with the same ``x0``, method, bounds,
    constraints and options and its own data shard in ``args``; the
    objective is the **sum** of the processes' values (for a mean, divide
    each shard's sum by the global sample count). Each evaluation sums
    value and gradient (or a Hessian-vector product) over the processes in
    one all-reduce of ``n + 3`` float64 (``8 (n + 3)`` bytes: value,
    gradient, an error flag and a lockstep check) over {engine}, so
    every process runs SciPy on bitwise the same numbers and returns the
    same result. An exception on one process makes every process raise
    (the others a ``RankFailed`` naming it); ``max_time`` is rank 0's
    clock. Constraints are functions of ``x`` alone: rank 0's values are
    used.
callback_rank : int or None, optional
    With ``distributed``: the process that runs ``callback`` and the
    progress bar (0 by default; None: every process). A ``StopIteration``
    there stops every process.
"""

TIME_LIMIT_MESSAGE = "Stopped: the time limit `max_time` was reached."
_TIME_UP = 4.0  # rank 0's contribution to ``status`` when its clock passed max_time
_HASH_BITS = 40


class RankFailed(RuntimeError):
    """Raised on every rank whose own code succeeded when another rank's raised."""

    def __init__(self, rank: int, where: str):
        super().__init__(
            f"rank {rank} raised an exception in {where}; it re-raises its own error, "
            "every other rank stops with this one"
        )
        self.rank = rank


class LockstepError(RuntimeError):
    """The ranks evaluated different points: their SciPy runs drifted apart."""


class Communicator(abc.ABC):
    """What a framework provides for ``distributed=``: ranks and a sum all-reduce.

    Attributes
    ----------
    rank : int
        This process's index, 0 to ``size - 1``.
    size : int
        The number of processes.

    Examples
    --------
    One process, nothing to exchange (what the tests build on, with threads):

    >>> class Alone(Communicator):
    ...     def allreduce_sum(self, buf):
    ...         return np.array(buf, dtype=np.float64)
    >>> Alone().allreduce_sum(np.ones(3)).tolist(), Alone().size
    ([1.0, 1.0, 1.0], 1)
    """

    rank: int = 0
    size: int = 1

    @abc.abstractmethod
    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """The elementwise sum of every rank's ``buf`` (1-d float64), bitwise the same on every rank.

        Must return within the framework's timeout when a rank never joins.
        """


def point_hash(x: np.ndarray) -> float:
    """A 40-bit integer (as a float) that changes when any bit of ``x`` does.

    A wrapping sum of x's float64 bit patterns: one pass over memory, far
    cheaper than a cryptographic hash or a broadcast of ``x``.

    Examples
    --------
    >>> x = np.array([0.1, 0.2, 0.3])
    >>> point_hash(x) == point_hash(x.copy())
    True
    >>> point_hash(x) == point_hash(np.nextafter(x, 1.0))
    False
    """
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    s = int(np.add.reduce(bits, dtype=np.uint64)) if bits.size else 0
    s ^= s >> _HASH_BITS
    return float(s & ((1 << _HASH_BITS) - 1))


def _lowest_failed_rank(fails: float) -> int:
    """The lowest rank r among those that contributed ``2**-r`` to ``fails`` (> 0)."""
    return int(-math.floor(math.log2(fails)))


class Reducer:
    """One fused all-reduce per evaluation: payload, status and lockstep check.

    Parameters
    ----------
    comm : Communicator
        The ranks.
    deadline : float or None
        Rank 0's ``time.perf_counter()`` after which the run stops.
    """

    def __init__(self, comm: Communicator, deadline: float | None = None):
        self.comm = comm
        self.deadline = deadline
        self.time_up = False
        self.calls = 0
        self.bytes = 0
        self.comm_seconds = 0.0

    def _allreduce(self, buf: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = np.asarray(self.comm.allreduce_sum(buf), dtype=np.float64)
        self.comm_seconds += time.perf_counter() - t
        self.calls += 1
        self.bytes += buf.nbytes
        return out

    def _check_slot(self, value: float) -> float:
        return (self.comm.size - 1) * value if self.comm.rank == 0 else -value

    def reduce(self, compute: Callable[[], np.ndarray], size: int, check: float, where: str,
               root: bool = False) -> np.ndarray:
        """Run ``compute()`` (a float64 vector of ``size``) here and sum it over the ranks.

        ``root``: every rank computes (so that errors are shared) but only
        rank 0's values are kept (constraints, which are the same on every
        rank). Raises this rank's own exception, :class:`RankFailed` or
        :class:`LockstepError` on every rank alike.
        """
        rank = self.comm.rank
        buf = np.zeros(size + 2)
        error = None
        try:
            payload = np.asarray(compute(), dtype=np.float64).reshape(-1)
            if payload.size != size:
                raise ValueError(f"{where} returned {payload.size} numbers; the other ranks expect {size}")
            if not root or rank == 0:
                buf[:size] = payload
        except BaseException as exc:  # noqa: B902 - shared with the other ranks, then re-raised
            error = exc
            buf[size] = 2.0**-rank
        if rank == 0 and self.deadline is not None and time.perf_counter() > self.deadline:
            buf[size] += _TIME_UP
        buf[size + 1] = self._check_slot(check)
        out = self._allreduce(buf)
        if error is not None:
            raise error
        status = out[size]
        fails = status % _TIME_UP
        if fails > 0:
            raise RankFailed(_lowest_failed_rank(fails), where)
        if out[size + 1] != 0:
            raise LockstepError(
                f"the ranks evaluated different points in {where}: their runs drifted apart. "
                "Every rank must call minimize with the same x0, method, bounds, constraints and "
                "options, and SciPy must see the same numbers on every rank."
            )
        if status >= _TIME_UP:
            self.time_up = True
        return out[:size]

    def agree(self, values: list[float], where: str, error: BaseException | None = None) -> None:
        """Check that every rank has the same ``values`` (small integers or hashes)."""
        buf = np.zeros(len(values) + 1)
        if error is None:
            buf[:-1] = [self._check_slot(v) for v in values]
        else:
            buf[-1] = 2.0**-self.comm.rank
        out = self._allreduce(buf)
        if error is not None:
            raise error
        if out[-1] > 0:
            raise RankFailed(_lowest_failed_rank(out[-1]), where)
        if np.any(out[:-1] != 0):
            raise LockstepError(
                f"the ranks disagree on {where}: every rank must call minimize with the same x0 "
                "(same structure, shapes, dtypes and values)"
            )

    def decide(self, stop: bool, error: BaseException | None, where: str) -> bool:
        """Share one iteration's callback outcome: True if any rank asked to stop."""
        buf = np.array([float(stop), 0.0 if error is None else 2.0**-self.comm.rank, 0.0])
        out = self._allreduce(buf)
        if error is not None:
            raise error
        if out[1] > 0:
            raise RankFailed(_lowest_failed_rank(out[1]), where)
        return bool(out[0] > 0)


class DistributedBackend(Backend):
    """``inner``'s conversions, with each objective evaluation summed over the ranks.

    The hooks sum when handed the user's objective (``objective``) and
    keep rank 0's values for anything else (constraint Jacobians and
    Hessians, which do not depend on a rank's data).
    """

    def __init__(self, inner: Backend, reducer: Reducer, objective: Callable):
        self.inner = inner
        self.reducer = reducer
        self.objective = objective
        self.wrapped: dict[int, Callable] = {}  # id(wrapped fun) -> the user's fun
        self.last_hash = 0.0

    # ---- conversions: the inner backend's, noting the point converted ------

    def is_leaf(self, obj: Any) -> bool:
        return self.inner.is_leaf(obj)

    def leaf_shape_dtype(self, leaf: Any, path: str):
        return self.inner.leaf_shape_dtype(leaf, path)

    def prepare_x0(self, x0: Any) -> Any:
        return self.inner.prepare_x0(x0)

    def layout_info(self, leaves: list, dtypes: tuple) -> Any:
        return self.inner.layout_info(leaves, dtypes)

    def to_flat(self, leaves, layout) -> np.ndarray:
        return self.inner.to_flat(leaves, layout)

    def from_flat(self, x: np.ndarray, layout, requires_grad: bool = False) -> list:
        # The driver converts the point right before it calls the user's
        # fun/jac/hessp eagerly: that point is what the lockstep check hashes.
        self.last_hash = point_hash(x)
        return self.inner.from_flat(x, layout, requires_grad)

    def to_numpy(self, obj: Any) -> np.ndarray:
        return self.inner.to_numpy(obj)

    def to_scalar(self, value: Any):
        return self.inner.to_scalar(value)

    def vdot(self, v, c):
        return self.inner.vdot(v, c)

    # ---- bookkeeping -------------------------------------------------------

    def _is_objective(self, fun: Callable) -> bool:
        return self.wrapped.get(id(fun), fun) is self.objective

    def after_value(self) -> None:
        """Stop every rank once rank 0's time is up.

        The driver's objective keeps the best point evaluated before the
        stop (as for ``max_time`` in one process), so nothing is kept here.
        """
        if self.reducer.time_up:
            self.reducer.deadline = None  # decided once; later evaluations (the result's) run
            self.reducer.time_up = False
            raise Halt(TIME_LIMIT_MESSAGE, best=True)

    # ---- derivative hooks --------------------------------------------------

    def value(self, fun: Callable, layout):
        if id(fun) in self.wrapped or not self._is_objective(fun):
            return None  # a wrapped fun already reduces (the driver calls it eagerly)
        local = self.inner.value(fun, layout) or _EagerValue(self.inner, layout, fun)

        def value(x: np.ndarray, args: tuple) -> float:
            f = float(self.reducer.reduce(lambda: [local(x, args)], 1, point_hash(x), "fun")[0])
            self.after_value()
            return f

        return value

    def value_and_grad(self, fun: Callable, layout):
        local = self.inner.value_and_grad(fun, layout)
        if local is None:
            return None
        root = not self._is_objective(fun)
        n = layout.n

        def compute(x, args):
            f, g = local(x, args)
            return np.concatenate(([f], np.asarray(g, dtype=np.float64).reshape(-1)))

        def value_and_grad(x: np.ndarray, args: tuple):
            out = self.reducer.reduce(lambda: compute(x, args), n + 1, point_hash(x), "fun", root)
            f, g = float(out[0]), out[1:]
            if not root:
                self.after_value()
            return f, g

        return value_and_grad

    def linearize_grad(self, fun: Callable, layout):
        raw = self.wrapped.get(id(fun), fun)
        local = self.inner.linearize_grad(raw, layout)
        if local is None:
            return None
        root = raw is not self.objective
        n = layout.n

        def linearize(x: np.ndarray, args: tuple):
            # A rank whose linearization fails raises in the product that
            # follows, inside the all-reduce every rank joins.
            try:
                hvp_local, error = local(x, args), None
            except BaseException as exc:  # noqa: B902
                hvp_local, error = None, exc
            hx = point_hash(x)

            def hvp(p: np.ndarray) -> np.ndarray:
                def compute():
                    if error is not None:
                        raise error
                    return hvp_local(p)

                check = float((int(hx) + int(point_hash(p))) % (1 << _HASH_BITS))
                return self.reducer.reduce(compute, n, check, "the Hessian-vector product", root)

            return hvp

        return linearize

    def value_and_jac(self, fun: Callable, layout):
        local = self.inner.value_and_jac(fun, layout)
        if local is None:
            return None
        n = layout.n
        sizes: dict[str, int] = {}

        def value_and_jac(x: np.ndarray, args: tuple):
            hx = point_hash(x)

            def compute():
                c, jac = local(x, args)
                return np.concatenate((np.ravel(c), np.ravel(jac)))

            # The constraint's size, learned once from rank 0 (one extra evaluation),
            # so that a rank whose constraint fails still joins a buffer of the right size.
            if "m" not in sizes:
                m_local = self.reducer.reduce(lambda: [np.size(local(x, args)[0])], 1, hx,
                                              "a constraint", root=True)
                sizes["m"] = int(m_local[0])
            m = sizes["m"]
            flat = self.reducer.reduce(compute, m + m * n, hx, "a constraint", root=True)
            return flat[:m], flat[m:].reshape(m, n)

        return value_and_jac


class _EagerValue:
    """The user's ``fun`` called eagerly over the flat vector (a backend without a value hook)."""

    def __init__(self, backend: Backend, layout, fun: Callable):
        self.backend, self.layout, self.fun = backend, layout, fun

    def __call__(self, x: np.ndarray, args: tuple) -> float:
        leaves = self.backend.from_flat(x, self.layout)
        return self.backend.to_scalar(self.fun(self.layout.unflatten(leaves), *args))


# ---- the user's callables the driver calls eagerly ---------------------------

def _wrap_eager(dist: DistributedBackend, layout, fun: Callable, jac: Any, hess: Any, hessp: Any):
    """``fun``, ``jac``, ``hessp`` and ``hess`` summed over the ranks where the driver calls them itself."""
    inner, reducer, n = dist.inner, dist.reducer, layout.n

    def flat(tree: Any, what: str) -> np.ndarray:
        return flat_gradient(inner, layout, tree, inner.is_leaf, what)

    new_fun = fun  # jac=None with autodiff: the hooks reduce
    if jac is True:
        def fun_value_and_grad(tree, *args):
            def compute():
                out = fun(tree, *args)
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise ValueError("with jac=True, fun must return a (value, gradient) pair")
                g = flat(out[1], "the gradient returned by fun")
                return np.concatenate(([inner.to_scalar(out[0])], g))

            out = reducer.reduce(compute, n + 1, dist.last_hash, "fun")
            f, g = float(out[0]), out[1:]
            dist.after_value()
            return f, g

        new_fun = fun_value_and_grad
    elif jac is not None or type(inner).value_and_grad is Backend.value_and_grad:
        # A jac callable, finite differences, a backend without autodiff: fun is called eagerly.
        def fun_value(tree, *args):
            out = reducer.reduce(lambda: [inner.to_scalar(fun(tree, *args))], 1, dist.last_hash, "fun")
            f = float(out[0])
            dist.after_value()
            return f

        new_fun = fun_value
    if new_fun is not fun:
        dist.wrapped[id(new_fun)] = fun

    new_jac = jac
    if callable(jac):
        def new_jac(tree, *args):
            return reducer.reduce(lambda: flat(jac(tree, *args), "the gradient returned by jac"),
                                  n, dist.last_hash, "jac")

    new_hessp = hessp
    if callable(hessp):
        def new_hessp(tree, p, *args):
            return reducer.reduce(lambda: flat(hessp(tree, p, *args), "the product returned by hessp"),
                                  n, dist.last_hash, "hessp")

    new_hess = hess
    if callable(hess) and not isinstance(hess, HessianUpdateStrategy):  # a strategy passes through
        def new_hess(tree, *args):
            def compute():
                h = hess(tree, *args)
                if not hasattr(h, "shape") or hasattr(h, "tocsr") or hasattr(h, "matvec"):
                    raise TypeError("with distributed=, hess must return a dense (n, n) matrix")
                return np.asarray(inner.to_numpy(h), dtype=np.float64).reshape(-1)

            return reducer.reduce(compute, n * n, dist.last_hash, "hess").reshape(n, n)

    return new_fun, new_jac, new_hess, new_hessp


def _wrap_callback(callback: Callable | None, method: str, reducer: Reducer, here: bool):
    """The user's callback run on this rank only if ``here``; its outcome shared by all ranks."""
    if callback is None:
        return None

    def run(*a, **k):
        stop, error = False, None
        if here:
            try:
                callback(*a, **k)
            except StopIteration:
                stop = True
            except BaseException as exc:  # noqa: B902
                error = exc
        if reducer.decide(stop, error, "the callback"):
            raise StopIteration

    if callback_style(callback, method) == "new":
        def new_style(intermediate_result):
            run(intermediate_result=intermediate_result)

        return new_style

    def legacy(*a):
        run(*a)

    return legacy


def minimize_distributed(
    driver_minimize: Callable,
    backend: Backend,
    comm: Communicator,
    fun: Callable,
    x0: Any,
    args: Any = (),
    method: Any = None,
    jac: Any = None,
    hess: Any = None,
    hessp: Any = None,
    bounds: Any = None,
    constraints: Any = (),
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
    *,
    max_time: float | None = None,
    progress: Any = False,
    callback_rank: int | None = 0,
    **extras: Any,
) -> OptimizeResult:
    """The driver's ``minimize`` with every evaluation summed over ``comm``'s ranks."""
    from .driver import build_layout

    if callback_rank is not None and not (isinstance(callback_rank, int) and 0 <= callback_rank < comm.size):
        raise ValueError(f"callback_rank must be None or a rank in 0..{comm.size - 1}, got {callback_rank!r}")
    if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
        raise ValueError(f"max_time must be a positive number, got {max_time!r}")
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    deadline = time.perf_counter() + max_time if max_time is not None else None
    reducer = Reducer(comm, deadline)

    # Handshake: the same x0 everywhere, or every rank raises (before any
    # collective whose size depends on x0).
    error, layout, checks = None, None, [0.0, 0.0]
    try:
        layout, leaves = build_layout(backend, backend.prepare_x0(x0))
        checks = [float(layout.n), point_hash(backend.to_flat(leaves, layout))]
    except BaseException as exc:  # noqa: B902
        error = exc
    reducer.agree(checks, "x0", error)

    dist = DistributedBackend(backend, reducer, fun)
    meth = method.lower() if isinstance(method, str) else ""
    new_fun, new_jac, new_hess, new_hessp = _wrap_eager(dist, layout, fun, jac, hess, hessp)
    here = callback_rank is None or comm.rank == callback_rank
    res = driver_minimize(
        dist, new_fun, x0, args, method, new_jac, new_hess, new_hessp, bounds, constraints, tol,
        _wrap_callback(callback, meth, reducer, here), options,
        progress=progress if here else False, **extras,
    )
    _share_rank0_clock(res, reducer)
    return res


def _share_rank0_clock(res: OptimizeResult, reducer: Reducer) -> None:
    """Rank 0's clock in ``history['time']`` and ``res.distributed``: the result is the same on every rank.

    ``res.distributed``: ``size``, ``allreduce_calls``, ``bytes`` (of this
    process's buffers, summed) and ``comm_seconds`` (rank 0's time in the
    all-reduces, waiting for the other ranks included).
    """
    history = res.get("history") or {}
    t = np.asarray(history.get("time", ()), dtype=np.float64).reshape(-1)
    calls, nbytes = reducer.calls + 1, reducer.bytes + 8 * (t.size + 3)  # this last all-reduce counted
    mine = np.concatenate((t, [reducer.comm_seconds]))
    out = reducer.reduce(lambda: mine, t.size + 1, float(t.size), "the result", root=True)
    if "time" in history:
        history["time"] = out[:-1]
    res.distributed = {"size": reducer.comm.size, "allreduce_calls": calls, "bytes": nbytes,
                       "comm_seconds": float(out[-1])}


def with_distributed(minimize: Callable, backend: Backend, communicator: Callable[[Any], Communicator],
                     doc: str) -> Callable:
    """``minimize`` that also takes ``distributed=`` and ``callback_rank=``.

    ``communicator(distributed)`` makes the framework's :class:`Communicator`.
    """
    signature = inspect.signature(minimize)

    @functools.wraps(minimize)
    def wrapper(*args: Any, **kwargs: Any) -> OptimizeResult:
        spec = kwargs.pop("distributed", None)
        if spec is None or spec is False:
            if "callback_rank" in kwargs:
                raise TypeError("callback_rank= only applies with distributed=")
            return minimize(*args, **kwargs)
        callback_rank = kwargs.pop("callback_rank", 0)
        bound = signature.bind(*args, **kwargs)
        named = dict(bound.arguments)
        extras = named.pop("extras", {})
        from .driver import minimize as driver_minimize

        return minimize_distributed(driver_minimize, backend, communicator(spec), callback_rank=callback_rank,
                                    **named, **extras)

    base = minimize.__doc__ or ""
    marker = "\nReturns\n-------"
    wrapper.__doc__ = base.replace(marker, "\n" + doc.rstrip("\n").replace("\n", "\n") + "\n" + marker, 1)
    return wrapper
