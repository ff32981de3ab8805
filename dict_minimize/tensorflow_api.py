"""TensorFlow backend: derivatives by ``tf.GradientTape``, compiled once with ``tf.function``.

The flat vector crosses to the device once per evaluation (one host copy,
then ``tf.split`` on the device) and comes back once (one ``tf.concat``,
one copy). float32 travels as float32 and is widened on the host.

How ``fun`` is compiled
-----------------------
Value and gradient, Hessian-vector products and constraint Jacobians each
run in a ``tf.function`` with a fixed ``input_signature``, traced once per
``minimize`` call, so ``fun`` must be traceable: TensorFlow ops on its
inputs, no ``.numpy()``. (To debug it eagerly, call
``tf.config.run_functions_eagerly(True)``: everything still works, slower.)
Its Python body runs when it is traced, not at every evaluation.

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
  Python number that changes value means a new trace.

Hessian-vector products are forward-over-reverse (``ForwardAccumulator``
over ``GradientTape``); at one point, every product reuses the device copy of
x, the converted ``args`` and the compiled function.

Keras models: :func:`keras_parameters` takes a model's trainable weights as a
dict for ``x0``, :func:`load_keras_parameters` puts a result back; ``fun``
evaluates the model with Keras 3's ``model.stateless_call`` (example there).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optree
import tensorflow as tf
from scipy.optimize import OptimizeResult

from .core import Backend, Layout
from .core import minimize as _minimize
from .core.docs import MINIMIZE_DOC
from .core.tree import NAMESPACE

__all__ = ["minimize", "keras_parameters", "load_keras_parameters", "TensorflowBackend"]

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

    name = "tensorflow"

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
            parts = [tf.reshape(tf.cast(_tensor(v), info.transfer), [-1]) for v in leaves]
            flat = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
        # One device->host copy; float32 is widened on the host (astype copies,
        # so the result never aliases a tensor's memory).
        return flat.numpy().astype(np.float64)

    def _buffer(self, x: np.ndarray, info: _Info) -> tf.Tensor:
        """One host->device copy of ``x`` in the transfer dtype."""
        # A new host array: convert_to_tensor may share its memory on the CPU.
        host = np.array(x, dtype=info.transfer_np, copy=True).reshape(-1)
        with tf.device(info.device):
            return tf.convert_to_tensor(host)

    @staticmethod
    def _views(buf: tf.Tensor, layout: Layout) -> list:
        """x0-shaped leaves split from ``buf`` (eager or inside a trace)."""
        pieces = tf.split(buf, list(layout.sizes)) if len(layout.sizes) > 1 else [buf]
        leaves = []
        for piece, shape, dtype in zip(pieces, layout.shapes, layout.dtypes):
            piece = tf.reshape(piece, shape)
            leaves.append(piece if dtype == buf.dtype else tf.cast(piece, dtype))
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

    def value_and_grad(self, fun: Callable, layout: Layout) -> "_Compiled":
        info: _Info = layout.info

        def build(rebuild_args):
            def value_and_grad(head, dynamic):
                (buf,) = head
                args = rebuild_args(dynamic)
                with tf.GradientTape() as tape:
                    tape.watch(buf)
                    value = _scalar(fun(layout.unflatten(self._views(buf, layout)), *args))
                grad = tape.gradient(value, buf)
                return value, _connected(grad)

            return value_and_grad

        compiled = _Compiled(build, (tf.TensorSpec([layout.n], info.transfer),), info.device)

        def run(x: np.ndarray, args: tuple):
            value, grad = compiled.evaluate((self._buffer(x, info),), args)
            return float(value.numpy()), grad.numpy().astype(np.float64)

        compiled.runner = run
        return compiled

    def linearize_grad(self, fun: Callable, layout: Layout) -> "_Compiled":
        info: _Info = layout.info
        spec = tf.TensorSpec([layout.n], info.transfer)

        def build(rebuild_args):
            def hvp(head, dynamic):
                buf, tangent = head
                args = rebuild_args(dynamic)
                # Forward over reverse: the JVP of the gradient along the tangent.
                with tf.autodiff.ForwardAccumulator(buf, tangent) as acc:
                    with tf.GradientTape() as tape:
                        tape.watch(buf)
                        value = _scalar(fun(layout.unflatten(self._views(buf, layout)), *args))
                    grad = _connected(tape.gradient(value, buf))
                return acc.jvp(grad, unconnected_gradients=_ZERO)

            return hvp

        compiled = _Compiled(build, (spec, spec), info.device)

        def linearize(x: np.ndarray, args: tuple):
            # Reused by every product at this x: the device buffer, the
            # converted args and the compiled function.
            buf = self._buffer(x, info)
            function, dynamic = compiled.prepare(args)

            def hvp(p: np.ndarray) -> np.ndarray:
                return function((buf, self._buffer(p, info)), dynamic).numpy().astype(np.float64)

            return hvp

        compiled.runner = linearize
        return compiled

    def value_and_jac(self, fun: Callable, layout: Layout) -> "_Compiled":
        info: _Info = layout.info
        n = layout.n

        def build(rebuild_args):
            def constraint(buf, args):
                c = fun(layout.unflatten(self._views(buf, layout)), *args)
                return tf.reshape(tf.convert_to_tensor(c), [-1])

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

        compiled = _Compiled(build, (tf.TensorSpec([n], info.transfer),), info.device)

        def run(x: np.ndarray, args: tuple):
            c, jac = compiled.evaluate((self._buffer(x, info),), args)
            return c.numpy().astype(np.float64), jac.numpy().astype(np.float64).reshape(-1, n)

        compiled.runner = run
        return compiled

    def vdot(self, v: np.ndarray, c: Any) -> tf.Tensor:
        c = tf.convert_to_tensor(c)
        return tf.reduce_sum(tf.cast(v, c.dtype) * tf.reshape(c, [-1]))


def _scalar(value: Any) -> tf.Tensor:
    """fun's value as a 0-d tensor, or a ValueError saying what it was."""
    if isinstance(value, (np.ndarray, np.generic)):
        raise ValueError(
            "fun must return a TensorFlow scalar computed from x; it returned a NumPy value "
            "(did it call .numpy()?)"
        )
    value = tf.convert_to_tensor(value)
    if value.shape.is_fully_defined() and value.shape.num_elements() != 1:
        raise ValueError(f"fun must return a scalar; it returned a tensor of shape {tuple(value.shape)}")
    return tf.reshape(value, [])


def _connected(grad: Any) -> tf.Tensor:
    if grad is None:
        raise ValueError(
            "fun's value does not depend on x through TensorFlow ops (was it a constant, "
            "or computed with NumPy or under tf.stop_gradient?)"
        )
    return tf.convert_to_tensor(grad)  # IndexedSlices (from gathers) become dense


class _Compiled:
    """A derivative hook: ``tf.function``s with fixed signatures, one per kind of ``args``.

    ``args`` is split into dynamic leaves (tensors and NumPy arrays: inputs of
    the compiled function) and static ones (everything else: baked into the
    trace). The static part and the structure form the cache key; within one
    key, a dynamic leaf whose shape changes relaxes the signature (differing
    dimensions become ``None``) and is traced again, once.

    Calling it runs ``runner`` (the protocol's function of the flat ``x``
    and ``args``); :meth:`tracing_count` says how often ``fun`` was traced.
    """

    def __init__(self, build: Callable, head_specs: tuple, device: str | None):
        self._build = build
        self._head_specs = head_specs
        self._device = device
        self._entries: dict = {}  # static key -> [dynamic specs, compiled call]
        self._last: tuple | None = None  # (args, function, dynamic tensors): the same args, no work
        self.functions: list = []  # every tf.function made, for tracing_count
        self.runner: Callable | None = None

    def __call__(self, *a):
        return self.runner(*a)

    def tracing_count(self) -> int:
        """How many times ``fun`` was traced by this hook (all signatures)."""
        return sum(f.experimental_get_tracing_count() for f in self.functions)

    def evaluate(self, head: tuple, args: tuple):
        """Run the compiled function on the device tensors ``head`` and ``args``."""
        function, dynamic = self.prepare(args)
        return function(head, dynamic)

    def prepare(self, args: tuple) -> tuple[Callable, tuple]:
        """The compiled function for ``args`` and its dynamic inputs."""
        if self._last is not None and self._last[0] is args:
            return self._last[1], self._last[2]
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
        entry = self._entries.get(key)
        if entry is None or not all(s.is_compatible_with(t) for s, t in zip(entry[0], dynamic)):
            specs = tuple(tf.TensorSpec.from_tensor(t) for t in dynamic)
            if entry is not None:
                specs = tuple(_relaxed(old, new) for old, new in zip(entry[0], specs))
            entry = [specs, self._trace(treespec, leaves, specs)]
            self._entries[key] = entry
        self._last = (args, entry[1], tuple(dynamic))
        return entry[1], tuple(dynamic)

    def _trace(self, treespec, leaves: list, specs: tuple):
        dynamic_at = [i for i, leaf in enumerate(leaves) if _is_dynamic(leaf)]
        static = [None if i in dynamic_at else leaf for i, leaf in enumerate(leaves)]

        def rebuild_args(dynamic: tuple) -> tuple:
            filled = list(static)
            for i, tensor in zip(dynamic_at, dynamic):
                filled[i] = tensor
            return optree.tree_unflatten(treespec, filled)

        function = tf.function(self._build(rebuild_args), input_signature=(self._head_specs, specs))
        self.functions.append(function)
        concrete: list = []  # traced on first use: never, when functions run eagerly

        def call(head: tuple, dynamic: tuple):
            with tf.device(self._device):
                if tf.config.functions_run_eagerly():  # debugging: fun's Python runs each time
                    return function(head, dynamic)
                if not concrete:
                    concrete.append(function.get_concrete_function())  # the one trace
                # The concrete function skips tf.function's per-call signature matching.
                return concrete[0](head, dynamic)

        return call


def _is_dynamic(leaf: Any) -> bool:
    """Whether an ``args`` leaf is an input of the compiled function (else baked in)."""
    return isinstance(leaf, tf.Tensor) or (isinstance(leaf, np.ndarray) and leaf.dtype.kind in "biufc")


def _relaxed(old: tf.TensorSpec, new: tf.TensorSpec) -> tf.TensorSpec:
    """The most specific spec that fits both (same dtype and rank), else the new one."""
    if old.dtype == new.dtype and old.shape.rank == new.shape.rank:
        return tf.TensorSpec(old.shape.most_specific_compatible_shape(new.shape), new.dtype)
    return new


_BACKEND = TensorflowBackend()


def minimize(
    fun: Callable,
    x0: Any,
    args: tuple = (),
    method: str | Callable | None = None,
    jac: Any = None,
    hess: Any = None,
    hessp: Callable | None = None,
    bounds: Any = None,
    constraints: Any = (),
    tol: float | None = None,
    callback: Callable | None = None,
    options: dict | None = None,
    **extras: Any,
) -> OptimizeResult:
    return _minimize(
        _BACKEND, fun, x0, args, method, jac, hess, hessp, bounds, constraints,
        tol, callback, options, **extras,
    )


minimize.__doc__ = MINIMIZE_DOC.format(
    tensors="TensorFlow tensors",
    tensor="tf.Tensor",
    jac_none=(
        "``None``: the gradient by ``tf.GradientTape`` in a ``tf.function`` traced once "
        "(``fun`` must be traceable; see the module docstring)."
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
