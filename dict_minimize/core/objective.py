"""The objective over the flat vector: one evaluation per distinct point.

SciPy asks for ``fun(x)`` and then ``jac(x)`` at the same ``x``; the memo
answers both from one value-and-gradient pass. It also counts evaluations,
keeps the best finite point evaluated (for time limits and faults), and forgets everything
when the stochastic mode swaps in a new batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


#: float64's dtype, compared with ``is`` on hot paths (cheaper than ``==``).
FLOAT64 = np.dtype(np.float64)


class Halt(Exception):
    """Raised inside an evaluation or a callback to end the run cleanly.

    The driver catches it and builds the result from the last iterate or the
    best point seen, with ``message`` as the result's message.
    """

    def __init__(self, message: str, *, status: int = 99, success: bool = False, best: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.success = success
        self.best = best


#: Up to this many elements, comparing two points' bytes is cheaper than ``==``
#: (no boolean temporary); above it, the byte copies cost more.
_BYTES_COMPARE_MAX = 4096


def frozen_copy(x: np.ndarray) -> np.ndarray:
    """A read-only float64 copy of ``x`` for a memo; at small n its bytes are kept for :func:`same_point`."""
    if type(x) is np.ndarray and x.dtype == np.float64 and x.ndim == 1 and x.size <= _BYTES_COMPARE_MAX:
        return np.frombuffer(x.tobytes(), dtype=np.float64)  # .base is the bytes: one copy, not two
    out = np.array(x, dtype=np.float64, copy=True)
    out.flags.writeable = False
    return out


def same_point(last: np.ndarray | None, x: np.ndarray) -> bool:
    """Whether ``x`` equals the float64 vector ``last`` (False when ``last`` is None).

    Equal bytes are the same point; SciPy's memo (``x == last``) would also
    call ``-0.0`` and ``0.0`` the same, where this re-evaluates (same value).
    The comparison runs up to three times per evaluation, so it is kept
    cheap: for a ``last`` made by :func:`frozen_copy` its bytes are at hand.
    """
    if last is None:
        return False
    if type(x) is np.ndarray and x.dtype == np.float64 and x.size <= _BYTES_COMPARE_MAX:
        if x.shape != last.shape:
            return False
        known = last.base
        return x.tobytes() == (known if type(known) is bytes else last.tobytes())
    # A new point usually differs in its first, middle or last element:
    # settled without comparing (and allocating) all of it.
    return np.shape(x) == last.shape and not _differs_somewhere(last, x) and bool((last == x).all())


def _differs_somewhere(last: np.ndarray | None, x: np.ndarray) -> bool:
    """True if ``x`` and ``last`` surely differ, from three elements (False: they may be equal)."""
    if last is None:
        return True
    if type(x) is not np.ndarray or x.shape != last.shape or x.ndim != 1 or not x.size:
        return False
    k = x.size - 1
    return x[0] != last[0] or x[k] != last[k] or x[k // 2] != last[k // 2]


class Objective:
    """Memoized, counted evaluations of the user's objective.

    Parameters
    ----------
    value : callable
        ``value(x, args) -> float``.
    value_and_grad : callable or None
        ``value_and_grad(x, args) -> (float, grad)``; when given, ``fun``
        computes both so that the following ``jac`` call is free.
    args : tuple
        Extra arguments passed after ``x`` (the stochastic mode swaps them).
    deadline : float or None
        ``time.perf_counter()`` value after which evaluations raise
        :class:`Halt`; the best point so far is then kept.
    """

    def __init__(
        self,
        value: Callable,
        value_and_grad: Callable | None = None,
        *,
        args: tuple = (),
        deadline: float | None = None,
    ):
        self._value = value
        self._value_and_grad = value_and_grad
        self.args = args
        self.deadline = deadline
        self.n_evaluations = 0
        self._x = None
        self._f = None
        self._g = None
        self._prev = (None, None)
        self._lin_x = None
        self._lin = None
        # The best finite point so far, kept so that no fault loses it. With
        # gradients it is a reference to the memo's copy of x; values alone
        # copy x only when it improves.
        self.best_x = None
        self.best_f = np.inf

    @property
    def last_x(self) -> np.ndarray | None:
        """The last point evaluated (a read-only copy), or None."""
        return self._x

    @property
    def last_value(self):
        """The last value evaluated, or None."""
        return self._f

    @property
    def last_grad(self) -> np.ndarray | None:
        """The last flat gradient evaluated (or noted), or None."""
        return self._g

    @property
    def has_grad(self) -> bool:
        """Whether each evaluation also computes the gradient."""
        return self._value_and_grad is not None

    def set_args(self, args: tuple) -> None:
        """Swap the extra arguments (a new minibatch); forget every memo."""
        self.args = args
        self._x = self._f = self._g = None
        self._prev = (None, None)
        self._lin_x = self._lin = None
        self.best_f = np.inf
        self.best_x = None

    def _check_time(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise Halt("Stopped: the time limit `max_time` was reached.", best=True)

    def _evaluate(self, x: np.ndarray) -> float:
        # The copy comes first: fun may be handed x itself and write into it.
        x_memo = frozen_copy(x)
        f, g = self._value_and_grad(x, self.args)
        # The point before stays known for the history: after a rejected
        # trust-region step the iterate is that one, not the last evaluated.
        self._prev = (self._x, self._g)
        self._x, self._f, self._g = x_memo, f, g
        if -np.inf < f < self.best_f:  # finite and better (False for NaN)
            self.best_f, self.best_x = f, x_memo
        return f

    def _same_point(self, x: np.ndarray) -> bool:
        """Whether ``x`` is the memo's point (SciPy asks fun, jac and the history at each one)."""
        return same_point(self._x, x)

    def fun(self, x: np.ndarray) -> float:
        """The objective at ``x``.

        Only a value that came with its gradient is memoized: a value alone
        is evaluated every time SciPy asks, as in SciPy (objectives with
        state, and nfev, stay as SciPy users know them).
        """
        if self._value_and_grad is None:
            self._check_time()
            self.n_evaluations += 1
            f = self._value(x, self.args)
            self._f = f
            f_real = np.real(f)  # complex under SciPy's complex-step differences
            if -np.inf < f_real < self.best_f:  # finite and better (False for NaN)
                self.best_f, self.best_x = float(f_real), np.array(np.real(x), dtype=np.float64, copy=True)
            return f
        if self._same_point(x):
            return self._f
        self._check_time()
        self.n_evaluations += 1
        return self._evaluate(x)

    def note_grad(self, g: np.ndarray) -> np.ndarray:
        """Keep a gradient computed outside the memo (a ``jac`` callable) for the history."""
        self._g = g
        return g

    def jac(self, x: np.ndarray) -> np.ndarray:
        """The flat gradient at ``x`` (computed with the value when not memoized)."""
        if not (self._same_point(x) and self._g is not None):
            self._check_time()
            self.n_evaluations += 1
            self._evaluate(x)
        # Like SciPy's MemoizeJac, hand out the memo itself: each evaluation
        # makes a new array and nothing here writes into an old one.
        return self._g

    def grad_for_history(self, x: np.ndarray) -> np.ndarray | None:
        """The gradient at the iterate ``x`` if one of the last two evaluations was there, else the last one."""
        # The answer is the last gradient unless x is the point before (a
        # rejected trust-region step). After a line search x is the last
        # point and differs from the one before almost everywhere: a few
        # probed elements settle it without comparing all of x (this runs
        # once per iteration).
        prev_x, prev_g = self._prev
        if prev_g is None or _differs_somewhere(prev_x, x) or not same_point(prev_x, x):
            return self._g
        return self._g if same_point(self._x, x) else prev_g

    def last_grad_at(self, x: np.ndarray) -> np.ndarray | None:
        """The memoized gradient if it is for ``x``, without evaluating."""
        if self._g is not None and self._same_point(x):
            return self._g
        return None

    def hvp_at(self, linearize: Callable, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``H(x) @ p``, reusing the linearization at ``x`` across products."""
        if self._lin is None or not same_point(self._lin_x, x):
            self._check_time()
            self._lin = linearize(x, self.args)
            self._lin_x = np.array(x, dtype=np.float64, copy=True)
        return self._lin(np.asarray(p, dtype=np.float64))
