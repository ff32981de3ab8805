"""Minibatches for the stochastic mode.

A re-iterable source (a list, a DataLoader, a ``tf.data.Dataset``: anything
for which ``iter(source) is not source``) is iterated again at each epoch;
a one-shot iterator ends the run when it is exhausted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
