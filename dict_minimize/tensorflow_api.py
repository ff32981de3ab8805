"""TensorFlow backend: derivatives by ``tf.GradientTape``, compiled once with ``tf.function``.

The flat vector crosses to the device once per evaluation (one host copy,
then ``tf.split`` on the device) and comes back once (one ``tf.concat``,
one copy). float32 travels as float32 and is widened on the host.

How ``fun`` is compiled
-----------------------
Value and gradient, Hessian-vector products, constraint Jacobians and, for
the gradient-free methods, the value alone each run in a ``tf.function``
with a fixed ``input_signature``, so ``fun`` must be traceable: TensorFlow
ops on its inputs, no ``.numpy()``. (To debug it eagerly, call
``tf.config.run_functions_eagerly(True)``: everything still works, slower.)
Its Python body runs when it is traced, not at every evaluation. A
gradient-free method whose ``fun`` cannot be traced (``.numpy()`` on a
symbolic tensor, NumPy on one, a Python ``bool`` of one) calls ``fun``
eagerly instead, with a ``UserWarning`` naming the cause, once; any other
error comes out as it is. Elsewhere those tracing errors come out with a
hint. An exception of the user's own raised in ``fun`` or a constraint,
while tracing or running, reaches the caller with its own class and
message (autograph's annotated copy is dropped).

Traces are made once per ``minimize`` call: every evaluation of the call
reuses them, and the next call traces ``fun`` again, since what ``fun``
reads at trace time (globals, closed-over numbers, attributes of a bound
method's object) may have changed in between, and a result never depends
on stale state. To share traces across calls (many short runs of one
objective), pass a function you compiled yourself,
``minimize(tf.function(loss), ...)``: ``tf.function`` already freezes what
``loss`` read at its own trace, by your choice, so the traces around it are
kept, keyed on its identity, x0's layout (structure, shapes, dtypes,
devices) and the static part of ``args`` (below). That cache holds the
function weakly (its traces go when it is garbage collected) and keeps at
most 32 hooks per function and 8 traces per kind of ``args``, the least
recently used dropped first.

The flat parameter buffer is one input of the compiled function. ``args``
(and, in the stochastic mode, each minibatch) are split into

- tensors and NumPy arrays: inputs of the compiled function (``fun``
  receives them as ``tf.Tensor``); a new minibatch of the same shape reuses
  the trace. When a shape changes (a smaller last batch), the differing
  dimensions are relaxed to ``None`` and the function is traced again, once:
  write ``tf.shape(X)[0]``, not ``X.shape[0]``, where batch sizes vary;
- everything else (Python numbers, strings, ``tf.Variable``, a Keras model,
  functions): baked into the trace, as ``tf.function`` does. Variables are
  captured by reference, so their current value is read at each call; a
  Python number that changes value means a new trace. Objects that are not
  plain Python values (a model, a Variable) are told apart by identity.

Hessian-vector products are forward-over-reverse (``ForwardAccumulator``
over ``GradientTape``); at one point, every product reuses the device copy of
x, the converted ``args`` and the compiled function.

Keras models: :func:`keras_parameters` takes a model's trainable weights as a
dict for ``x0``, :func:`load_keras_parameters` puts a result back; ``fun``
evaluates the model with Keras 3's ``model.stateless_call`` (example there).
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optree
import tensorflow as tf

from .core import Backend, Layout, bind, bind_least_squares, bind_root
from .core.backend import refuse_complex
from .core.cache import CallCache, CompileCache
from .core.tree import NAMESPACE

__all__ = ["minimize", "least_squares", "root", "keras_parameters", "load_keras_parameters",
           "TensorflowBackend"]

_FLOATS = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_ZERO = tf.UnconnectedGradients.ZERO
#: Python values baked into a trace by value (others by identity).
_BY_VALUE = (bool, int, float, complex, str, bytes, type(None), np.generic)


def _keras_variable(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 variable (checked without importing Keras)."""
    keras = sys.modules.get("keras")
    variable = getattr(keras, "Variable", None) if keras is not None else None
    return variable is not None and isinstance(obj, variable)


def _is_tf_leaf(obj: Any) -> bool:
    return isinstance(obj, (tf.Tensor, tf.Variable)) or _keras_variable(obj)


def _tensor(leaf: Any) -> tf.Tensor:
    """A leaf (tensor, variable, IndexedSlices, array, float) as a ``tf.Tensor``, read-only."""
    if isinstance(leaf, tf.Tensor):
        return leaf
    if _is_tf_leaf(leaf) or isinstance(leaf, tf.IndexedSlices):
        return tf.convert_to_tensor(leaf)  # reads a variable's value; the variable is untouched
    return tf.convert_to_tensor(np.asarray(leaf))


@dataclass(frozen=True)
class _Info:
    device: str | None  # None: TensorFlow's default placement (x0 held no tensor)
    devices: tuple  # each leaf's device
    transfer: tf.DType  # dtype of the flat buffer on the device
    transfer_np: type  # the same, in NumPy


class TensorflowBackend(Backend):
    """Leaves: ``tf.Tensor``, ``tf.Variable`` and Keras variables (read, never assigned), arrays, floats."""

    def is_leaf(self, obj: Any) -> bool:
        return _is_tf_leaf(obj)

    def leaf_shape_dtype(self, leaf: Any, path: str):
        if _is_tf_leaf(leaf):
            dtype = tf.as_dtype(leaf.dtype)  # Keras variables report a string
            if dtype not in _FLOATS:
                raise TypeError(
                    f"{path} has dtype {dtype.name}; only floating dtypes "
                    "(float16, bfloat16, float32, float64) can be optimized"
                )
            return tuple(int(d) for d in leaf.shape), dtype
        if isinstance(leaf, float):
            return (), tf.float64
        if isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind == "f":
            return leaf.shape, tf.as_dtype(leaf.dtype)
        kind = getattr(leaf, "dtype", type(leaf).__name__)
        raise TypeError(
            f"{path} is {kind}; x0's leaves must be floating tf.Tensor, tf.Variable, NumPy arrays or floats"
        )

    def layout_info(self, leaves, dtypes) -> _Info:
        devices = tuple(_tensor(v).device if _is_tf_leaf(v) else None for v in leaves)
        home = next((d for d in devices if d), None)
        devices = tuple(d or home for d in devices)
        transfer = tf.float64 if tf.float64 in dtypes else tf.float32
        return _Info(home, devices, transfer, transfer.as_numpy_dtype)

    # ---- conversions ------------------------------------------------------

    def to_flat(self, leaves: list, layout: Layout) -> np.ndarray:
        info: _Info = layout.info
        with tf.device(info.device):
            parts = [_flat1d(_cast(_tensor(v), info.transfer)) for v in leaves]
            flat = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
        # One device->host copy; float32 is widened on the host (astype copies,
        # so the result never aliases a tensor's memory).
        return flat.numpy().astype(np.float64)

    def _buffer(self, x: np.ndarray, info: _Info, copy: bool = True) -> tf.Tensor:
        """One host->device copy of ``x`` in the transfer dtype.

        ``copy=False`` lets the tensor share ``x``'s memory on the CPU: only
        for evaluations that hold on to nothing computed from it.
        """
        refuse_complex(x, "tensorflow")  # every flat vector SciPy hands over comes through here
        # By default a new host array: convert_to_tensor may share its memory on the CPU.
        host = np.array(x, dtype=info.transfer_np, copy=True if copy else None).reshape(-1)
        if info.device is None:  # TensorFlow's default placement: no scope to enter
            return tf.convert_to_tensor(host)
        with tf.device(info.device):
            return tf.convert_to_tensor(host)

    @staticmethod
    def _views(buf: tf.Tensor, layout: Layout) -> list:
        """x0-shaped leaves split from ``buf`` (eager or inside a trace).

        Reshapes and casts that would change nothing are skipped: fewer ops
        to trace (a third of the trace time with many leaves) and to run.
        """
        pieces = tf.split(buf, list(layout.sizes)) if len(layout.sizes) > 1 else [buf]
        leaves = []
        for piece, shape, dtype in zip(pieces, layout.shapes, layout.dtypes):
            if tuple(piece.shape) != shape:
                piece = tf.reshape(piece, shape)
            leaves.append(_cast(piece, dtype))
        return leaves

    def from_flat(self, x: np.ndarray, layout: Layout, requires_grad: bool = False) -> list:
        info: _Info = layout.info
        buf = self._buffer(x, info)
        with tf.device(info.device):
            leaves = self._views(buf, layout)
        if any(d != info.device for d in info.devices):  # x0 spanned devices
            moved = []
            for leaf, device in zip(leaves, info.devices):
                with tf.device(device):
                    moved.append(tf.identity(leaf))
            leaves = moved
        return leaves

    def to_numpy(self, obj: Any) -> np.ndarray:
        if _is_tf_leaf(obj) or isinstance(obj, tf.IndexedSlices):
            obj = _tensor(obj)
            if obj.dtype == tf.bfloat16:  # NumPy has no bfloat16
                obj = tf.cast(obj, tf.float32)
            return obj.numpy()
        if isinstance(obj, (list, tuple)) and any(_is_tf_leaf(v) for v in obj):
            return np.asarray([self.to_numpy(v) for v in obj])
        return np.asarray(obj)

    # ---- derivatives ------------------------------------------------------
    #
    # Each hook builds a _Compiled for this call (or, for a user's tf.function,
    # finds in _CACHE the one shared by every call with the same fun, hook
    # kind and layout), and hands the driver a _Run: this call's runner over
    # it. The traced Python functions reach fun through fun_ref (a weak
    # reference for the shared ones), never directly.

    def _tree(self, buf: tf.Tensor, layout: Layout) -> Any:
        return layout.unflatten(self._views(buf, layout))

    def value(self, fun: Callable, layout: Layout) -> "_Run":
        info: _Info = layout.info

        def make(fun_ref):
            def build(rebuild_args):
                def value(head, dynamic):
                    (buf,) = head
                    return _scalar(fun_ref()(self._tree(buf, layout), *rebuild_args(dynamic)), check=False)

                return value

            return _Compiled(build, (tf.TensorSpec([layout.n], info.transfer),), info.device)

        run = _Run(_cache_for(fun).get(fun, ("value", layout), make))
        eager = False

        def value(x: np.ndarray, args: tuple) -> float:
            nonlocal eager
            if not eager:
                try:
                    return float(run.evaluate((self._buffer(x, info, copy=False),), args).numpy())
                except Exception as e:  # noqa: BLE001 - only tracing pitfalls fall back
                    if not _untraceable(e):
                        raise
                    # Gradient-free methods need no tracing: call fun as it is, and say so once.
                    eager = True
                    _warn_eager(e)
            return self.to_scalar(fun(layout.unflatten(self.from_flat(x, layout)), *args))

        run.runner = value
        return run

    def value_and_grad(self, fun: Callable, layout: Layout) -> "_Run":
        info: _Info = layout.info

        def make(fun_ref):
            def build(rebuild_args):
                def value_and_grad(head, dynamic):
                    (buf,) = head
                    args = rebuild_args(dynamic)
                    with tf.GradientTape() as tape:
                        tape.watch(buf)
                        value = _scalar(fun_ref()(self._tree(buf, layout), *args))
                    # tf.split's gradient is one concatenation: no per-leaf cost.
                    grad = tape.gradient(value, buf)
                    return value, _connected(grad)

                return value_and_grad

            return _Compiled(build, (tf.TensorSpec([layout.n], info.transfer),), info.device)

        run = _Run(_cache_for(fun).get(fun, ("value_and_grad", layout), make))

        def value_and_grad(x: np.ndarray, args: tuple):
            value, grad = run.evaluate((self._buffer(x, info, copy=False),), args)
            # The gradient tensor is this call's alone: sharing its memory is safe.
            return float(value.numpy()), grad.numpy().astype(np.float64, copy=False)

        run.runner = value_and_grad
        return run

    def linearize_grad(self, fun: Callable, layout: Layout) -> "_Run":
        info: _Info = layout.info
        spec = tf.TensorSpec([layout.n], info.transfer)

        def make(fun_ref):
            def build(rebuild_args):
                def hvp(head, dynamic):
                    buf, tangent = head
                    args = rebuild_args(dynamic)
                    # Forward over reverse: the JVP of the gradient along the tangent.
                    with tf.autodiff.ForwardAccumulator(buf, tangent) as acc:
                        with tf.GradientTape() as tape:
                            tape.watch(buf)
                            value = _scalar(fun_ref()(self._tree(buf, layout), *args))
                        grad = _connected(tape.gradient(value, buf))
                    return acc.jvp(grad, unconnected_gradients=_ZERO)

                return hvp

            return _Compiled(build, (spec, spec), info.device)

        run = _Run(_cache_for(fun).get(fun, ("linearize_grad", layout), make))

        def linearize(x: np.ndarray, args: tuple):
            # Reused by every product at this x: the device buffer, the
            # converted args and the compiled function.
            buf = self._buffer(x, info)
            function, dynamic = run.prepare(args)

            def hvp(p: np.ndarray) -> np.ndarray:
                product = function((buf, self._buffer(p, info, copy=False)), dynamic)
                return product.numpy().astype(np.float64)

            return hvp

        run.runner = linearize
        return run

    def value_and_jac(self, fun: Callable, layout: Layout) -> "_Run":
        info: _Info = layout.info
        n = layout.n

        def make(fun_ref):
            def build(rebuild_args):
                def constraint(buf, args):
                    return _flat_output(fun_ref()(self._tree(buf, layout), *args))

                def value_and_jac(head, dynamic):
                    (buf,) = head
                    args = rebuild_args(dynamic)
                    with tf.GradientTape() as tape:
                        tape.watch(buf)
                        c = constraint(buf, args)
                    m = c.shape[0]
                    if m is not None and n < m:
                        # Forward mode: n Jacobian-vector products, vectorized.
                        def column(tangent):
                            with tf.autodiff.ForwardAccumulator(buf, tangent) as acc:
                                c_t = constraint(buf, args)
                            return acc.jvp(c_t, unconnected_gradients=_ZERO)

                        jac = tf.transpose(tf.vectorized_map(column, tf.eye(n, dtype=buf.dtype)))
                    else:
                        # Reverse mode: m vector-Jacobian products, vectorized by pfor.
                        jac = tape.jacobian(c, buf, unconnected_gradients=_ZERO)
                    return c, jac

                return value_and_jac

            return _Compiled(build, (tf.TensorSpec([n], info.transfer),), info.device)

        run = _Run(_cache_for(fun).get(fun, ("value_and_jac", layout), make))

        def value_and_jac_flat(x: np.ndarray, args: tuple):
            c, jac = run.evaluate((self._buffer(x, info, copy=False),), args)
            return c.numpy().astype(np.float64), jac.numpy().astype(np.float64).reshape(-1, n)

        run.runner = value_and_jac_flat
        return run

    def vdot(self, v: np.ndarray, c: Any) -> tf.Tensor:
        c = tf.convert_to_tensor(c)
        return tf.reduce_sum(tf.cast(v, c.dtype) * tf.reshape(c, [-1]))

    def ravel_concat(self, tensors: list) -> tf.Tensor:
        tensors = [tf.convert_to_tensor(t) for t in tensors]
        dtype = max((t.dtype for t in tensors), key=lambda d: d.size)  # the widest, as NumPy would promote
        return tf.concat([tf.reshape(tf.cast(t, dtype), [-1]) for t in tensors], 0)


def _cast(t: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    return t if t.dtype == dtype else tf.cast(t, dtype)


def _flat1d(t: tf.Tensor) -> tf.Tensor:
    """``t`` raveled; no op when it is already 1-d."""
    return t if t.shape.rank == 1 else tf.reshape(t, [-1])


def _flat_output(c: Any) -> tf.Tensor:
    """A constraint's value as one 1-d tensor.

    A (nested) list or tuple is its items raveled and concatenated, in the
    widest floating dtype among its tensors (TensorFlow does not mix dtypes).
    """
    if not isinstance(c, (list, tuple)):
        return _flat1d(tf.convert_to_tensor(c))
    parts = [_flat_output(v) if isinstance(v, (list, tuple)) or _is_tf_leaf(v) else v for v in c]
    tensors = [t for t in parts if isinstance(t, tf.Tensor)]
    if not tensors:
        return _flat1d(tf.convert_to_tensor(c))
    floating = [t.dtype for t in tensors if t.dtype.is_floating]
    dtype = max(floating, key=lambda d: d.size) if floating else tensors[0].dtype
    return tf.concat([_flat1d(_cast(t, dtype)) if isinstance(t, tf.Tensor) else tf.constant([t], dtype)
                      for t in parts], 0)


def _scalar(value: Any, check: bool = True) -> tf.Tensor:
    """fun's value as a 0-d tensor, or a ValueError saying what it was.

    ``check=False`` (the value alone, nothing to differentiate) accepts a
    value that is not computed from x.
    """
    if check and isinstance(value, (np.ndarray, np.generic)):
        raise ValueError(
            "fun must return a TensorFlow scalar computed from x; it returned a NumPy value "
            "(did it call .numpy()?)"
        )
    value = tf.convert_to_tensor(value)
    if value.shape.rank == 0:
        return value
    if value.shape.is_fully_defined() and value.shape.num_elements() != 1:
        raise ValueError(f"fun must return a scalar; it returned a tensor of shape {tuple(value.shape)}")
    return tf.reshape(value, [])


def _warn_eager(cause: BaseException) -> None:
    cause = cause.__cause__ if cause.__cause__ is not None else cause
    warnings.warn(
        f"fun could not be traced by tf.function ({type(cause).__name__}: {cause}); this gradient-free "
        "run calls it eagerly at every evaluation instead, which is slower",
        UserWarning,
        stacklevel=2,
    )


def _connected(grad: Any) -> tf.Tensor:
    if grad is None:
        raise ValueError(
            "fun's value does not depend on x through TensorFlow ops (was it a constant, "
            f"or computed with NumPy or under tf.stop_gradient?); {ASSIGN_HINT}"
        )
    return tf.convert_to_tensor(grad)  # IndexedSlices (from gathers) become dense


EAGER_HINT = (
    "fun is traced by tf.function, so its tensors are symbolic: use TensorFlow ops, not .numpy(), "
    "float(x) or NumPy, on them; to debug fun eagerly, call tf.config.run_functions_eagerly(True)"
)
ASSIGN_HINT = (
    "assigning x to variables (variable.assign(...)) cuts the gradient: evaluate a Keras model "
    "on x with model.stateless_call, x0 = keras_parameters(model)"
)


_EAGER_TENSOR = type(tf.constant(0.0))


def _unwrapped(error: BaseException) -> BaseException:
    """The exception user code raised, where autograph re-raised a copy of it.

    Autograph raises a new exception (of the same class with an annotated
    message, or a ``StagingError`` when the class cannot be rebuilt from a
    message) whose ``__context__`` is the original: the copy and the
    original share one ``ag_error_metadata`` object, which tells them apart
    from an exception the user raised while handling another.
    """
    while True:
        metadata = getattr(error, "ag_error_metadata", None)
        source = error.__context__
        if metadata is None or source is None or getattr(source, "ag_error_metadata", None) is not metadata:
            return error
        error = source


def _untraceable(error: BaseException) -> bool:
    """Whether ``error`` is what tracing raises for code that needs concrete values."""
    if isinstance(error, tf.errors.OperatorNotAllowedInGraphError):  # Python bool of a tensor
        return True
    if isinstance(error, AttributeError):  # .numpy() on a symbolic tensor: what only eager tensors have
        return isinstance(getattr(error, "obj", None), tf.Tensor) and hasattr(_EAGER_TENSOR, error.name or "")
    if isinstance(error, (NotImplementedError, TypeError)):  # NumPy, float() on a symbolic tensor
        return "symbolic" in str(error).lower()
    return False


def _explained(error: BaseException) -> BaseException:
    """``error`` with a hint when it is a tracing pitfall; the user's own exceptions as they are."""
    if not _untraceable(error) or EAGER_HINT in str(error):
        return error
    message = f"{error} ({EAGER_HINT})"
    if isinstance(error, AttributeError):
        hinted = AttributeError(message, name=error.name, obj=error.obj)
    else:
        try:
            hinted = type(error)(message)
        except Exception:  # noqa: BLE001 - a class that cannot take a message: leave it
            return error
    hinted.__cause__ = error
    return hinted


# ---- compiled functions: per call, or across calls for a tf.function -------

#: Most hooks (kinds x layouts) kept per user function, and most traces (kinds
#: of ``args``) per hook; the least recently used go first.
MAX_HOOKS_PER_FUNCTION = 32
MAX_TRACES_PER_HOOK = 8

_CACHE = CompileCache(MAX_HOOKS_PER_FUNCTION)


def _cache_for(fun: Callable) -> CompileCache | CallCache:
    """Where one hook keeps its traces: across calls only for a ``tf.function`` of the user's.

    Anything else ``fun`` reads at trace time may change between calls, so
    it is traced once per call (see :mod:`dict_minimize.core.cache`).
    """
    if isinstance(fun, tf.types.experimental.PolymorphicFunction):
        return _CACHE
    return CallCache(MAX_HOOKS_PER_FUNCTION)


class _Compiled:
    """One hook's ``tf.function``s with fixed signatures, one per kind of ``args``.

    Made per call, or shared by calls for a user's ``tf.function`` (:func:`_cache_for`).

    ``args`` is split into dynamic leaves (tensors and NumPy arrays: inputs of
    the compiled function) and static ones (everything else: baked into the
    trace). The static part and the structure form the key of a trace; within
    one key, a dynamic leaf whose shape changes relaxes the signature
    (differing dimensions become ``None``) and is traced again, once. At most
    :data:`MAX_TRACES_PER_HOOK` keys are kept, the least recently used dropped.
    """

    def __init__(self, build: Callable, head_specs: tuple, device: str | None):
        self._build = build
        self._head_specs = head_specs
        self._device = device
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()  # static key -> (dynamic specs, tf.function, call)
        self._dropped_traces = 0  # traces of functions no longer kept

    @property
    def functions(self) -> list:
        """The ``tf.function``s kept, least recently used first."""
        return [function for _, function, _ in self._entries.values()]

    def tracing_count(self) -> int:
        """How many times ``fun`` was traced by this hook (all signatures, all calls)."""
        return self._dropped_traces + sum(f.experimental_get_tracing_count() for f in self.functions)

    def prepare(self, args: tuple) -> tuple[Callable, tuple]:
        """The compiled function for ``args`` and its dynamic inputs."""
        leaves, treespec = optree.tree_flatten(
            args, is_leaf=_is_tf_leaf, none_is_leaf=True, namespace=NAMESPACE
        )
        dynamic, key = [], [treespec]
        for leaf in leaves:
            if _is_dynamic(leaf):
                dynamic.append(tf.convert_to_tensor(leaf))
                key.append(None)
            elif isinstance(leaf, _BY_VALUE):
                key.append((type(leaf), leaf))
            else:
                key.append(("id", id(leaf)))  # the trace keeps the object alive
        key = tuple(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not all(s.is_compatible_with(t) for s, t in zip(entry[0], dynamic)):
                specs = tuple(tf.TensorSpec.from_tensor(t) for t in dynamic)
                if entry is not None:
                    specs = tuple(_relaxed(old, new) for old, new in zip(entry[0], specs))
                    self._dropped_traces += entry[1].experimental_get_tracing_count()
                entry = self._entries[key] = (specs, *self._trace(treespec, leaves, specs))
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_TRACES_PER_HOOK:
                _, (_, function, _) = self._entries.popitem(last=False)
                self._dropped_traces += function.experimental_get_tracing_count()
        return entry[2], tuple(dynamic)

    def _trace(self, treespec, leaves: list, specs: tuple):
        dynamic_at = [i for i, leaf in enumerate(leaves) if _is_dynamic(leaf)]
        static = [None if i in dynamic_at else leaf for i, leaf in enumerate(leaves)]

        def rebuild_args(dynamic: tuple) -> tuple:
            filled = list(static)
            for i, tensor in zip(dynamic_at, dynamic):
                filled[i] = tensor
            return optree.tree_unflatten(treespec, filled)

        function = tf.function(self._build(rebuild_args), input_signature=(self._head_specs, specs))
        concrete: list = []  # traced on first use: never, when functions run eagerly

        def run(head: tuple, dynamic: tuple):
            if tf.config.functions_run_eagerly():  # debugging: fun's Python runs each time
                return function(head, dynamic)
            if not concrete:
                concrete.append(function.get_concrete_function())  # the one trace
            # The concrete function skips tf.function's per-call signature matching.
            return concrete[0](head, dynamic)

        def call(head: tuple, dynamic: tuple):
            try:
                if self._device is None:  # TensorFlow's default placement: no scope to enter
                    return run(head, dynamic)
                with tf.device(self._device):
                    return run(head, dynamic)
            except Exception as e:  # noqa: BLE001 - re-raised: the user's own, or with a hint
                error = _explained(_unwrapped(e))
                if error is e:
                    raise
            raise error  # outside the handler: the user's exception keeps its own context

        return function, call


class _Run:
    """What a hook hands the driver for one ``minimize`` call: ``runner`` over a shared :class:`_Compiled`.

    Calling it runs ``runner`` (the protocol's function of the flat ``x`` and
    ``args``). The driver passes the same ``args`` tuple until the minibatch
    changes: the split of ``args`` is remembered for that tuple, by this call
    only (the shared cache never holds a call's ``args``).
    """

    def __init__(self, compiled: _Compiled):
        self.compiled = compiled
        self.runner: Callable | None = None
        self._last: tuple | None = None  # (args, function, dynamic tensors)

    def __call__(self, *a):
        return self.runner(*a)

    @property
    def functions(self) -> list:
        return self.compiled.functions

    def tracing_count(self) -> int:
        """How many times ``fun`` was traced by this hook, over every ``minimize`` call."""
        return self.compiled.tracing_count()

    def prepare(self, args: tuple) -> tuple[Callable, tuple]:
        """The compiled function for ``args`` and its dynamic inputs."""
        if self._last is None or self._last[0] is not args:
            function, dynamic = self.compiled.prepare(args)
            self._last = (args, function, dynamic)
        return self._last[1], self._last[2]

    def evaluate(self, head: tuple, args: tuple):
        """Run the compiled function on the device tensors ``head`` and ``args``."""
        function, dynamic = self.prepare(args)
        return function(head, dynamic)


def _is_dynamic(leaf: Any) -> bool:
    """Whether an ``args`` leaf is an input of the compiled function (else baked in)."""
    return isinstance(leaf, tf.Tensor) or (isinstance(leaf, np.ndarray) and leaf.dtype.kind in "biufc")


def _relaxed(old: tf.TensorSpec, new: tf.TensorSpec) -> tf.TensorSpec:
    """The most specific spec that fits both (same dtype and rank), else the new one."""
    if old.dtype == new.dtype and old.shape.rank == new.shape.rank:
        return tf.TensorSpec(old.shape.most_specific_compatible_shape(new.shape), new.dtype)
    return new


_BACKEND = TensorflowBackend()


minimize = bind(
    _BACKEND,
    __name__,
    tensors="TensorFlow tensors",
    tensor="tf.Tensor",
    jac_none=(
        "``None``: the gradient by ``tf.GradientTape`` in a ``tf.function`` traced once "
        "per call (across calls for a ``fun`` that is itself a ``tf.function``; "
        "``fun`` must be traceable; see the module docstring)."
    ),
    hess_none=(
        "``None``: Hessian-vector products by autodiff (forward over reverse) where the method uses them."
    ),
    cons_none="Without ``jac``, Jacobians by autodiff.",
    example="""    >>> import tensorflow as tf
    >>> from dict_minimize.tensorflow_api import minimize
    >>> def rosen(x):
    ...     a, b = x["a"], x["b"]
    ...     return tf.reduce_sum(100 * (b - a**2) ** 2 + (1 - a) ** 2)
    >>> x0 = {"a": tf.fill([3], -1.0), "b": tf.fill([3], 2.0)}
    >>> res = minimize(rosen, x0, method="L-BFGS-B", bounds={"b": (None, 5.0)})
    >>> res.x["a"].dtype.name, bool(tf.reduce_all(tf.abs(res.x["a"] - 1.0) < 1e-3))
    ('float32', True)""",
)

least_squares = bind_least_squares(
    _BACKEND,
    __name__,
    jac_default=None,
    tensors="TensorFlow tensors",
    tensor="tf.Tensor",
    jac_none="``None`` (the default): the dense Jacobian by TensorFlow autodiff in a ``tf.function`` "
    "(forward mode when there are more residuals than variables).",
    example="""    >>> import tensorflow as tf
    >>> from dict_minimize.tensorflow_api import least_squares
    >>> t = tf.linspace(tf.constant(0.0, tf.float64), 1.0, 20)
    >>> y = 2.0 * tf.exp(-1.5 * t)
    >>> def residuals(p):
    ...     return p["a"] * tf.exp(-p["k"] * t) - y
    >>> x0 = {"a": tf.constant(1.0, dtype=tf.float64), "k": tf.constant(1.0, dtype=tf.float64)}
    >>> res = least_squares(residuals, x0)
    >>> round(float(res.x["a"]), 4), round(float(res.x["k"]), 4), res.jac.shape
    (2.0, 1.5, (20, 2))""",
)

root = bind_root(
    _BACKEND,
    __name__,
    tensors="TensorFlow tensors",
    tensor="tf.Tensor",
    jac_none="``None``: the dense Jacobian by TensorFlow autodiff (for 'hybr' and 'lm').",
    example="""    >>> import tensorflow as tf
    >>> from dict_minimize.tensorflow_api import root
    >>> def equations(x):
    ...     return {"cube": x["a"] ** 3 - 8.0, "equal": x["b"] - x["a"]}
    >>> x0 = {"a": tf.constant(1.0, dtype=tf.float64), "b": tf.constant(0.0, dtype=tf.float64)}
    >>> res = root(equations, x0)
    >>> round(float(res.x["a"]), 4), round(float(res.x["b"]), 4)
    (2.0, 2.0)""",
)


# ---- Keras models -----------------------------------------------------------


def _unique_names(variables: list) -> list[str]:
    names = [getattr(v, "path", None) or v.name for v in variables]
    if len(set(names)) == len(names):
        return names
    return [f"{name}:{i}" for i, name in enumerate(names)]


def keras_parameters(model: Any) -> dict[str, tf.Tensor]:
    """Copies of a Keras model's trainable weights, as a dict ready for :func:`minimize`.

    Parameters
    ----------
    model : keras.Model or keras.layers.Layer
        A built Keras 3 model (TensorFlow backend).

    Returns
    -------
    dict of str to tf.Tensor
        Each trainable weight's value, keyed by its path
        (``"sequential/dense/kernel"``), in ``model.trainable_variables``
        order. Copies: changing the model later leaves them alone.
        Non-trainable weights (batch-norm statistics) are not included.

    Examples
    --------
    ``fun`` evaluates the model with the given weights through Keras 3's
    ``stateless_call``, which takes the trainable weights as a list in
    ``model.trainable_variables`` order (the dict's order):

    >>> import keras, numpy as np, tensorflow as tf
    >>> from dict_minimize.tensorflow_api import keras_parameters, load_keras_parameters, minimize
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> X = tf.constant(np.random.default_rng(0).normal(size=(64, 3)), tf.float32)
    >>> y = tf.reduce_sum(X, axis=1, keepdims=True)
    >>> def loss(params, X, y):
    ...     pred, _ = model.stateless_call(list(params.values()), model.non_trainable_variables, X)
    ...     return tf.reduce_mean((pred - y) ** 2)
    >>> res = minimize(loss, keras_parameters(model), args=(X, y), method="L-BFGS-B")
    >>> load_keras_parameters(model, res.x)
    >>> bool(np.allclose(model.layers[0].kernel.numpy(), 1.0, atol=1e-3))
    True
    """
    variables = list(model.trainable_variables)
    return {
        name: tf.identity(tf.convert_to_tensor(v))
        for name, v in zip(_unique_names(variables), variables)
    }


def load_keras_parameters(model: Any, params: Any) -> None:
    """Assign weights (from :func:`keras_parameters` or a result's ``x``) to a Keras model.

    Parameters
    ----------
    model : keras.Model or keras.layers.Layer
        The model whose trainable weights are assigned; non-trainable
        weights are left untouched.
    params : dict of str to tensor, or sequence of tensors
        A dict keyed as :func:`keras_parameters` keys it, or a list in
        ``model.trainable_variables`` order. Values are cast to each
        weight's dtype.

    Raises
    ------
    ValueError
        When keys, count or shapes do not match the model's trainable weights
        (checked before anything is assigned).

    Examples
    --------
    >>> import keras, numpy as np
    >>> from dict_minimize.tensorflow_api import keras_parameters, load_keras_parameters
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> halved = {name: w / 2 for name, w in keras_parameters(model).items()}
    >>> load_keras_parameters(model, halved)
    >>> [bool(np.allclose(w.numpy(), h.numpy())) for w, h in zip(model.trainable_variables, halved.values())]
    [True, True]
    """
    variables = list(model.trainable_variables)
    names = _unique_names(variables)
    if isinstance(params, dict):
        missing = [k for k in names if k not in params]
        extra = [k for k in params if k not in names]
        if missing or extra:
            raise ValueError(
                f"params must have the model's trainable weight names; missing {missing[:3]}, "
                f"unexpected {extra[:3]}"
            )
        values = [params[k] for k in names]
    elif isinstance(params, (list, tuple)):
        if len(params) != len(variables):
            raise ValueError(
                f"params has {len(params)} tensors; the model has {len(variables)} trainable weights"
            )
        values = list(params)
    else:
        raise TypeError(f"params must be a dict or a list of tensors, got {type(params).__name__}")
    tensors = []
    for name, variable, value in zip(names, variables, values):
        tensor = tf.cast(_tensor(value), tf.as_dtype(variable.dtype))
        if tuple(tensor.shape) != tuple(variable.shape):
            raise ValueError(
                f"params[{name!r}] has shape {tuple(tensor.shape)}; "
                f"the weight has shape {tuple(variable.shape)}"
            )
        tensors.append(tensor)
    for variable, tensor in zip(variables, tensors):
        variable.assign(tensor)


# ---- argmin: the solution as a differentiable function of args ----------


class _ArgminBackend(TensorflowBackend):
    """The backend with argmin's two hooks: parameters are floating tensors and variables."""

    def is_parameter(self, leaf: Any) -> bool:
        return _is_tf_leaf(leaf) and tf.as_dtype(leaf.dtype) in _FLOATS

    def implicit_function(self, forward, backward):
        def apply(inputs: list) -> list:
            if not inputs:
                return forward([])
            if not tf.executing_eagerly():
                raise TypeError(
                    "argmin runs SciPy on concrete values: call it eagerly, not inside tf.function "
                    "(a GradientTape around it works)"
                )
            # Variables are read once here; the tape records the read, so their gradients flow.
            tensors = [tf.convert_to_tensor(v) for v in inputs]

            @tf.custom_gradient
            def solve(*values):
                outputs = forward(list(values))

                def host_grad(*cotangents):
                    grads = backward([c.numpy() for c in cotangents])
                    return [tf.zeros_like(v) if g is None else tf.constant(np.asarray(g), dtype=v.dtype)
                            for g, v in zip(grads, values)]

                def grad(*cotangents, variables=None):
                    cotangents = [tf.zeros_like(o) if c is None else c for c, o in zip(cotangents, outputs)]
                    if all(hasattr(c, "numpy") for c in cotangents):
                        out = host_grad(*cotangents)
                    else:  # traced (tape.jacobian's loop): the host solve as a py_function
                        out = tf.py_function(host_grad, cotangents, [v.dtype for v in values])
                        out = [tf.ensure_shape(g, v.shape) for g, v in zip(out, values)]
                    return (out, [None] * len(variables)) if variables else out

                return list(outputs), grad

            return list(solve(*tensors))

        return apply


from .core.implicit import bind_argmin  # noqa: E402

__all__.append("argmin")
argmin = bind_argmin(
    _ArgminBackend(),
    __name__,
    tensors="TensorFlow tensors",
    tensor="floating tf.Tensor or tf.Variable",
    how="a ``tf.custom_gradient``, under a ``tf.GradientTape``; argmin itself runs eagerly, "
    "not inside ``tf.function``",
    example="""    >>> import tensorflow as tf
    >>> from dict_minimize.tensorflow_api import argmin
    >>> y = tf.constant([1.5, -2.0, 0.5], dtype=tf.float64)
    >>> def f(x, y):  # relu(y) = argmin ||x||^2 - 2 y'x subject to x >= 0
    ...     return tf.reduce_sum(x["x"] ** 2) - 2 * tf.reduce_sum(y * x["x"])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(y)
    ...     x = argmin(f, {"x": tf.ones(3, tf.float64)}, args=(y,), bounds={"x": (0.0, None)})
    ...     total = tf.reduce_sum(x["x"])
    >>> tape.gradient(total, y).numpy().tolist()
    [1.0, 0.0, 1.0]""",
)
