"""What runs after every SciPy iteration.

One hook records the history, updates the progress bar, calls the user's
callback in the style it asks for, enforces ``max_time`` and, in the
stochastic mode, swaps in the next minibatch.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
from scipy.optimize import OptimizeResult

from .objective import FLOAT64, Halt, Objective
from .stochastic import BatchFeed

# SciPy calls TNC's callback as callback(xk) only; every other method takes
# the new style, which SciPy detects by this parameter name.
_NEW_STYLE = {"intermediate_result"}
STOPPED_BY_CALLBACK = "`callback` raised `StopIteration`."


def grad_norm(grad) -> float:
    """The 2-norm of a flat gradient, NaN for None."""
    # np.linalg.norm's checks cost more than the product at small n (and
    # ``dtype is`` less than ``dtype ==``); this runs once per iteration.
    if type(grad) is np.ndarray and grad.ndim == 1 and grad.dtype is FLOAT64:
        return math.sqrt(grad.dot(grad))
    if grad is None:
        return np.nan
    g = np.ravel(grad)
    return float(np.sqrt(np.vdot(g, g).real))


#: Up to this many elements L-BFGS-B's record keeps the gradient's bytes (at
#: most 1 KiB an iteration) and ``history`` takes all the norms at once: inside
#: SciPy's loop a norm costs a few microseconds, as much as SciPy's own
#: iteration at small n (benchmarks/dropin_pairs.py).
_DEFER_NORM_MAX = 128


def _norms(column: tuple) -> np.ndarray:
    """The recorded gradient norms as float64: floats as they are, a gradient's bytes normed."""
    kept = [i for i, v in enumerate(column) if type(v) is bytes]
    if not kept:
        return np.asarray(column, dtype=np.float64)
    out = np.array([np.nan if type(v) is bytes else v for v in column], dtype=np.float64)
    sizes = {len(column[i]) for i in kept}
    if len(sizes) == 1:  # one gradient size (always, in one run): one product for all
        grads = np.frombuffer(b"".join([column[i] for i in kept]), dtype=np.float64).reshape(len(kept), -1)
        out[kept] = np.sqrt(np.einsum("ij,ij->i", grads, grads))
    else:
        out[kept] = [grad_norm(np.frombuffer(column[i], dtype=np.float64)) for i in kept]
    return out


def _shape(a) -> tuple:
    # np.shape costs a microsecond; this runs once per iteration.
    return a.shape if type(a) is np.ndarray else np.shape(a)


def _fun_and_grad(x, state) -> tuple:
    """The value and gradient SciPy's state gives at the iterate ``x`` (None where it gives none)."""
    if state is None:
        return None, None
    grad = state.get("grad")
    if grad is None:
        grad = state.get("jac")
    if grad is not None and _shape(grad) != _shape(x):
        grad = None  # e.g. a constraint Jacobian under "jac"
    return state.get("fun"), grad


def callback_style(callback: Callable | None, method: str) -> str | None:
    """``'new'``, ``'trust-constr'`` (``(x, state)``), ``'legacy'`` or ``None``."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = set()
    if params == _NEW_STYLE:
        return "new"
    if method == "trust-constr" and _takes_two_positional(callback):
        return "trust-constr"
    return "legacy"


def _takes_two_positional(callback: Callable) -> bool:
    """Whether ``callback(xk, state)`` binds (SciPy's trust-constr style), else ``callback(xk)``."""
    try:
        inspect.signature(callback).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): SciPy's style
        return True
    return True


def _signature(name: str) -> inspect.Signature:
    return inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)])


_NEW_SIGNATURE, _LEGACY_SIGNATURE = _signature("intermediate_result"), _signature("xk")


class IterationHook:
    """The callback SciPy receives; see the module docstring.

    Parameters
    ----------
    method : str
        SciPy's method name, lower case.
    callback : callable or None
        The user's callback.
    tree_of : callable
        Flat vector -> pytree.
    objective : Objective
        The memoized objective (for gradient norms and counts).
    progress : bool or mapping
        A tqdm bar (``True``, or tqdm keyword arguments).
    deadline : float or None
        ``time.perf_counter()`` after which the run stops.
    feed : BatchFeed or None
        The stochastic mode's minibatches.
    make_args : callable
        Batch -> the extra arguments of the objective.
    total : int or None
        Iteration count the progress bar aims for.
    record : bool
        Whether the result gets :attr:`history`. Without it, and with
        nothing else to do per iteration, SciPy gets no callback at all:
        its own loop, at its own cost (iterations are then not counted).
    """

    def __init__(
        self,
        method: str,
        callback: Callable | None,
        tree_of: Callable,
        objective: Objective | None,
        *,
        progress: bool | Mapping = False,
        deadline: float | None = None,
        feed: BatchFeed | None = None,
        make_args: Callable | None = None,
        total: int | None = None,
        record: bool = True,
    ):
        if progress is not None and not isinstance(progress, (bool, np.bool_, Mapping)):
            raise TypeError(f"progress must be True, False or a mapping of tqdm arguments, got {progress!r}")
        self.method = method
        self.record = bool(record)
        self.user = callback
        self.style = callback_style(callback, method)
        self.tree_of = tree_of
        self.objective = objective
        self.deadline = deadline
        self.feed = feed
        self.make_args = make_args
        self.last_x = None
        self.stopped_by_user = False
        self.start = time.perf_counter()
        # One row per iteration: (fun, grad_norm, perf_counter(), nfev, epoch);
        # ``history`` adds ``nit`` and makes the time relative to the start.
        self._rows: list[tuple] = []
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            kwargs = {"total": total, "unit": "it", "desc": f"{method}", "leave": True}
            if isinstance(progress, Mapping):
                kwargs.update(progress)
            self.bar = tqdm(**kwargs)

    @property
    def only_records(self) -> bool:
        """Whether recording the history is all there is to do per iteration (the common case)."""
        return (self.style is None and self.bar is None and self.deadline is None and self.feed is None
                and self.objective is not None)

    @property
    def calls_back(self) -> bool:
        """Whether SciPy gets a callback: not when there is neither a history to record nor anything else."""
        return self.record or not self.only_records

    @property
    def nit(self) -> int | None:
        """Iterations so far (each one is recorded), or None when SciPy calls no callback."""
        return len(self._rows) if self.calls_back else None

    # SciPy builds its wrapper from the callback's signature, so expose the
    # one each method expects.
    def scipy_callback(self, legacy: bool = False) -> Callable | None:
        if not self.calls_back:
            return None
        if self.only_records:
            callback = self._record_only(legacy)
        elif legacy:
            def callback(xk):
                self.step(xk, None)
        else:
            def callback(intermediate_result):
                self.step(intermediate_result["x"], intermediate_result)
        # SciPy reads the signature on every call of minimize; a ready one
        # spares it inspect's ~15 us, a cost SciPy without a callback does not pay.
        callback.__signature__ = _LEGACY_SIGNATURE if legacy else _NEW_SIGNATURE
        return callback

    def _record_only(self, legacy: bool) -> Callable:
        """A callback that only records: nothing to call, stop or swap (the common case).

        It runs once per iteration inside SciPy's loop, where every Python
        operation counts against the drop-in's cost (benchmarks/overhead.py):
        :meth:`_record`'s work with the lookups bound once.
        """
        obj, append, clock = self.objective, self._rows.append, time.perf_counter
        if self.method == "l-bfgs-b" and not legacy:
            # L-BFGS-B reports a new iterate once its line search has evaluated
            # there, last: the last gradient is the iterate's (no comparison of
            # points), and its state holds x and fun only.
            def record_lbfgsb(intermediate_result):
                g = obj.last_grad
                if type(g) is np.ndarray and g.size <= _DEFER_NORM_MAX and g.dtype is FLOAT64:
                    norm = g.tobytes()  # its norm is taken with the others, in ``history``
                else:
                    norm = grad_norm(g)
                append((intermediate_result["fun"], norm, clock(), obj.n_evaluations, 0))

            return record_lbfgsb

        def record(x, state):
            fun, grad = _fun_and_grad(x, state)
            norm = grad_norm(obj.grad_for_history(x) if grad is None else grad)
            append((float(obj.last_value if fun is None else fun), norm, clock(), obj.n_evaluations, 0))

        if legacy:
            return lambda xk: record(xk, None)
        # ``["x"]``: OptimizeResult's attribute access costs a microsecond.
        return lambda intermediate_result: record(intermediate_result["x"], intermediate_result)

    def _record(self, x: np.ndarray, state: OptimizeResult | None) -> None:
        # Runs once per iteration: kept to a few lookups, one gradient norm and one append.
        obj = self.objective
        fun, grad = _fun_and_grad(x, state)
        if obj is not None:
            if fun is None:
                fun = obj.last_value
            if grad is None:
                # For line-search methods the last gradient evaluated is the
                # accepted iterate's; after a rejected trust-region step the one before.
                grad = obj.grad_for_history(x)
        gnorm = grad_norm(grad)
        fun = np.nan if fun is None else float(fun)
        self._rows.append((fun, gnorm, time.perf_counter(), obj.n_evaluations if obj is not None else -1,
                           self.feed.epoch if self.feed is not None else 0))
        if self.bar is not None:
            post = {"f": f"{fun:.6g}", "|g|": f"{gnorm:.3g}"}
            if self.feed is not None:
                post["epoch"] = self.feed.epoch
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    @property
    def history(self) -> dict[str, np.ndarray]:
        """One array per recorded quantity (``nit``, ``fun``, ``grad_norm``, ``time``, ``nfev``, ``epoch``), one entry per iteration."""
        fun, norm, clock, nfev, epoch = zip(*self._rows) if self._rows else [()] * 5
        return {
            "nit": np.arange(1, len(self._rows) + 1),
            "fun": np.asarray(fun, dtype=np.float64),
            "grad_norm": _norms(norm),
            "time": np.asarray(clock, dtype=np.float64) - self.start,
            "nfev": np.asarray(nfev, dtype=np.int64),
            "epoch": np.asarray(epoch, dtype=np.int64),
        }

    def _call_user(self, x: np.ndarray, state: OptimizeResult | None) -> None:
        if self.style is None:
            return
        x_tree = self.tree_of(np.array(x, dtype=np.float64, copy=True))
        if self.style == "new":
            res = OptimizeResult(state if state is not None else {})
            res.x = x_tree
            self.user(intermediate_result=res)
        elif self.style == "trust-constr":
            res = OptimizeResult(state)
            res.x = x_tree
            if self.user(x_tree, res) is True:  # SciPy stops trust-constr on a True return
                raise StopIteration
        else:
            self.user(x_tree)

    def step(self, x: np.ndarray, state: OptimizeResult | None) -> None:
        self._record(x, state)
        try:
            self._call_user(x, state)
            if self.deadline is not None and time.perf_counter() > self.deadline:
                raise Halt("Stopped: the time limit `max_time` was reached.", best=True)
            if self.feed is not None:
                self.objective.set_args(self.make_args(self.feed.advance()))
        except StopIteration:
            self.stopped_by_user = True
            if self.method != "tnc":
                raise  # SciPy stops cleanly on it
            # TNC cannot stop on StopIteration: the driver does, from here.
            self.last_x = np.array(x, dtype=np.float64, copy=True)
            raise Halt(STOPPED_BY_CALLBACK) from None
        except Halt:
            self.last_x = np.array(x, dtype=np.float64, copy=True)
            raise

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
