"""Compiled functions kept for the compiling backends (JAX, TensorFlow), and the rule for sharing them.

The rule: a result never depends on stale state. What ``fun`` reads when it
is traced (globals, closure cells, attributes of a bound method's object,
arrays it closes over) may change between two ``minimize`` calls, and nothing
short of tracing again can prove it did not. So a plain ``fun`` is traced
and compiled once per call (:class:`CallCache`): every evaluation of that
call reuses the compilation, the next call builds its own. Compiled code is
shared across calls (:class:`CompileCache`) only for a function the user
compiled themselves (``jax.jit``, ``tf.function``): such a function already
freezes what it read at its own trace, by the framework's rule and the
user's choice, so reusing the wrapper's compilation around it gives the
results the user's function itself gives.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any


class CompileCache:
    """Compiled functions per user function: kept while it lives, never keeping it alive.

    An entry is found by ``fun``'s identity (a bound method by its object and
    its function: each attribute access makes a new bound method) and a
    hashable key (hook kind, layout, static args). What ``make`` builds
    reaches ``fun`` through a weak reference only, so the entries go when
    ``fun`` (or the bound method's object) is garbage collected, with
    whatever they hold. A callable that cannot be weakly referenced, or an
    unhashable key, gets a fresh, uncached build every time.
    """

    def __init__(self, max_per_function: int):
        self._max = max_per_function
        # Reentrant: a weakref callback (``_forget``) may run in this thread
        # while the lock is held, when a collection starts inside ``get``.
        self._lock = threading.RLock()
        self._slots: dict[int, tuple[weakref.ref, OrderedDict]] = {}

    def get(self, fun: Callable, key: Any, make: Callable[[Callable[[], Callable]], Any]) -> Any:
        """``make(fun_ref)`` for ``(fun, key)``, built once while ``fun`` lives; ``fun_ref()`` is ``fun``."""
        try:
            if inspect.ismethod(fun):
                owner, key, fun_ref = fun.__self__, (fun.__func__, key), weakref.WeakMethod(fun)
            else:
                owner, fun_ref = fun, weakref.ref(fun)
            hash(key)
        except TypeError:
            return make(lambda: fun)
        owner_id = id(owner)
        with self._lock:
            slot = self._slots.get(owner_id)
            if slot is None or slot[0]() is not owner:
                slot = (weakref.ref(owner, partial(self._forget, owner_id)), OrderedDict())
                self._slots[owner_id] = slot
            entries = slot[1]
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
            built = entries[key] = make(fun_ref)
            while len(entries) > self._max:
                entries.popitem(last=False)
            return built

    def _forget(self, owner_id: int, ref: weakref.ref) -> None:
        with self._lock:
            slot = self._slots.get(owner_id)
            if slot is not None and slot[0] is ref:
                del self._slots[owner_id]

    def __len__(self) -> int:
        """How many user functions (or bound methods' objects) have entries."""
        return len(self._slots)


class CallCache:
    """Compiled functions of one ``minimize`` call: :class:`CompileCache`'s ``get``, held by the call.

    It lives as long as the hook that made it (one call), holds ``fun``
    strongly, and keeps at most ``max_entries`` builds, the least recently
    used dropped first. An unhashable key gets a fresh build every time.
    """

    def __init__(self, max_entries: int):
        self._max = max_entries
        self._entries: OrderedDict = OrderedDict()

    def get(self, fun: Callable, key: Any, make: Callable[[Callable[[], Callable]], Any]) -> Any:
        """``make(fun_ref)`` for ``key``, built once in this call; ``fun_ref()`` is ``fun``."""
        try:
            hash(key)
        except TypeError:
            return make(lambda: fun)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        built = self._entries[key] = make(lambda: fun)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return built
