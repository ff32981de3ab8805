"""Minibatches for the stochastic mode.

:func:`growing_batches` makes index batches that grow to the full data set.
A re-iterable source (a list, a DataLoader, a ``tf.data.Dataset``: anything
for which ``iter(source) is not source``) is iterated again at each epoch;
a one-shot iterator ends the run when it is exhausted.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from numbers import Real
from typing import Any

import numpy as np

from .objective import Halt


class BatchFeed:
    """Hands out minibatches one iteration at a time, counting epochs.

    Parameters
    ----------
    source : iterable
        The minibatches.
    epochs : int or None
        Stop (successfully) after this many full passes over ``source``.
    """

    def __init__(self, source: Iterable, epochs: int | None = None):
        try:
            self._it = iter(source)
        except TypeError:
            raise TypeError(f"batches must be iterable, got {type(source).__name__}") from None
        if epochs is not None and (int(epochs) != epochs or epochs < 1):
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if epochs is not None and _is_infinite(source):
            raise ValueError(
                "epochs= cannot be counted over batches that never end: the source says it is "
                "infinite (a tf.data.Dataset after .repeat() has cardinality INFINITE); drop .repeat() "
                "to count epochs, or bound the run with options={'maxiter': ...} or max_time="
            )
        self.source = source
        self.reiterable = self._it is not source
        self.epochs = epochs
        self.epoch = 0  # completed passes
        self.batches_seen = 0
        self.current = self._next(first=True)

    def _next(self, first: bool = False) -> Any:
        try:
            batch = next(self._it)
        except StopIteration:
            if first and self.epoch == 0 and self.batches_seen == 0:
                raise ValueError("batches is empty") from None
            self.epoch += 1
            if not self.reiterable:
                raise Halt("Stopped: the batch iterator is exhausted.", status=0, success=True) from None
            if self.epochs is not None and self.epoch >= self.epochs:
                raise Halt(f"Stopped: {self.epoch} epoch(s) done.", status=0, success=True) from None
            self._it = iter(self.source)
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("batches yielded nothing when iterated again") from None
        self.batches_seen += 1
        return batch

    def advance(self) -> Any:
        """Move to the next minibatch (a new epoch when the source runs out)."""
        self.current = self._next()
        return self.current


#: What ``cardinality()`` returns for a source that never ends (tf.data's INFINITE_CARDINALITY).
INFINITE_CARDINALITY = -1


def _is_infinite(source: Any) -> bool:
    """Whether ``source`` says it never ends, through a ``cardinality()`` method (``tf.data``).

    Duck-typed, so the core imports no framework; a source without one (or
    whose answer is not a number, such as tf.data's UNKNOWN, -2) may end.
    """
    probe = getattr(source, "cardinality", None)
    if not callable(probe):
        return False
    try:
        return int(probe()) == INFINITE_CARDINALITY
    except (TypeError, ValueError):
        return False


def growing_batches(
    n: int,
    start: int,
    *,
    growth: float = 1.0,
    overlap: float = 0.0,
    seed: int | np.random.Generator | None = None,
    bucket: float | None = None,
) -> Iterator[np.ndarray]:
    """Indices of minibatches that grow geometrically to the full data set, for the stochastic mode.

    L-BFGS-B takes unit quasi-Newton steps: on a fixed-size minibatch each
    step all but solves that minibatch, so the iterates settle where small
    subsets of the data are fitted, not the whole. Growing the batch
    geometrically until it is the full set (the hybrid deterministic-stochastic
    scheme of Friedlander and Schmidt, 2012) keeps the cheap early steps and
    ends with full-batch convergence. Consecutive batches may share samples
    (``overlap``): the gradient differences that L-BFGS-B builds its curvature
    model from then change less from batch to batch (Berahas et al., 2016).

    Parameters
    ----------
    n : int
        Number of samples; indices run over ``range(n)``.
    start : int
        Size of the first batch.
    growth : float
        Each batch is ``growth`` times the size of the one before (rounded
        down), up to ``n``; ``1.0`` keeps the size fixed.
    overlap : float
        Fraction of each batch, in ``[0, 1)``, that the next one shares: the
        next batch starts ``(1 - overlap) * size`` samples further along a
        stream of shuffled passes over the data.
    seed : int, numpy.random.Generator or None
        Seeds the shuffles.
    bucket : float or None
        Round each size below ``n`` down to ``start * bucket**k`` (a number
        > 1): the batch then holds that many real samples (no padding,
        nothing else changes), and the sizes take at most
        ``log(n / start) / log(bucket) + 2`` distinct values. A compiled
        ``fun`` (JAX) compiles once per distinct batch shape, so this bounds
        its compilations; ``None`` (the default) keeps every size, one new
        shape per iteration while the batch grows.

    Yields
    ------
    numpy.ndarray
        ``int64`` indices of one batch. Once the size reaches ``n`` every
        batch is ``arange(n)``. The stream never ends: bound the run with
        ``options={'maxiter': ...}`` or ``max_time=``.

    Examples
    --------
    >>> from dict_minimize import growing_batches
    >>> sizes = [len(i) for i, _ in zip(growing_batches(100, 10, growth=2.0, seed=0), range(6))]
    >>> sizes
    [10, 20, 40, 80, 100, 100]

    In the stochastic mode, index the data with each batch (``x[i]`` for
    NumPy, PyTorch and JAX arrays, ``tf.gather(x, i)`` for TensorFlow)::

        x, y = ...  # the training set
        batches = ((x[i], y[i]) for i in growing_batches(len(x), 250, growth=1.007, overlap=0.5))
        res = minimize(loss, params, method="L-BFGS-B", batches=batches, options={"maxiter": 1000})

    With ``bucket=2.0`` the sizes are a few powers of two times ``start``:

    >>> sizes = [len(i) for i, _ in zip(growing_batches(100, 10, growth=1.5, seed=0, bucket=2.0), range(8))]
    >>> sizes
    [10, 10, 20, 20, 40, 40, 100, 100]
    """
    n = _positive_int("n", n)
    start = _positive_int("start", start)
    if not (isinstance(growth, Real) and 1.0 <= growth < np.inf):
        raise ValueError(f"growth must be a finite number >= 1, got {growth!r}")
    if not (isinstance(overlap, Real) and 0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    if bucket is not None and not (isinstance(bucket, Real) and 1.0 < bucket < np.inf):
        raise ValueError(f"bucket must be a finite number > 1 or None, got {bucket!r}")
    sizes = _bucket_sizes(min(start, n), n, bucket) if bucket is not None else None
    return _growing_batches(n, start, float(growth), float(overlap), np.random.default_rng(seed), sizes)


def _bucket_sizes(start: int, n: int, bucket: float) -> np.ndarray:
    """The sizes below ``n`` a batch is rounded down to: ``start * bucket**k``, increasing, distinct."""
    sizes, size = [], float(start)
    while int(size + 1e-9) < n:
        if not sizes or int(size + 1e-9) > sizes[-1]:
            sizes.append(int(size + 1e-9))
        size *= bucket
    return np.asarray(sizes, dtype=np.int64)


def _positive_int(name: str, value: Any) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _growing_batches(n: int, start: int, growth: float, overlap: float, rng: np.random.Generator,
                     sizes: np.ndarray | None = None):
    size = float(min(start, n))
    stream = rng.permutation(n)  # shuffled passes over the data, one after another
    position = 0
    while True:
        b = min(int(size + 1e-9), n)  # start * growth**k, forgiving the product's rounding
        if b >= n:
            yield np.arange(n, dtype=np.int64)
            continue
        if sizes is not None:  # down to its bucket: the largest size <= b
            b = int(sizes[np.searchsorted(sizes, b, side="right") - 1])
        # The first b distinct samples from ``position`` on: a batch that runs
        # from one pass into the next skips the samples it already holds.
        length = b
        while True:
            if position + length > len(stream):
                stream = np.concatenate([stream[position:], rng.permutation(n)])
                position = 0
            window = stream[position:position + length]
            _, first = np.unique(window, return_index=True)
            if len(first) >= b:
                break
            length += b - len(first)
        yield window[np.sort(first)[:b]].astype(np.int64, copy=False)
        position += max(1, int(b * (1.0 - overlap)))
        size *= growth
