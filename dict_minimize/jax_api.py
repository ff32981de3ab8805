"""JAX backend: derivatives by ``jax.jit``-compiled autodiff, arrays on any device.

Leaves of ``x0`` are ``jax.Array`` (NumPy arrays and Python floats are
accepted too), float16, bfloat16, float32 or float64. Results are
``jax.Array`` with x0's dtypes on x0's device; a leaf sharded over a mesh
keeps its sharding. Leaves committed to different single devices are a
``ValueError``, since JAX cannot compute with them together. Dicts keep x0's
insertion order: JAX's own tree utilities sort dict keys, so they are never
used to order x0.

Compilation
    ``fun`` is traced and compiled for value and gradient together (``jax.jit``
    of ``jax.value_and_grad`` with respect to x0's leaves: the flat parameter
    buffer is split into the leaves and the gradient leaves are concatenated
    inside the compiled function, so one transfer each way), and once more
    where Hessian-vector products, constraint Jacobians or (for the
    gradient-free methods) the value alone are needed. So ``fun`` must be
    traceable by ``jax.jit`` (no ``float(x)``, no Python branches on values);
    ``jac=True`` and a ``jac`` callable call ``fun`` eagerly instead, and a
    gradient-free method whose ``fun`` fails to trace (a JAX concretization
    or tracer-conversion error, nothing else) falls back to calling it
    eagerly, with a ``UserWarning`` naming the cause, once. Hessian-vector products linearize the
    gradient once per point (``jax.linearize`` of ``jax.grad``): the products
    SciPy asks for at that point only run the linear part.

Compiled once per call; across calls only for a function you jitted
    Within one ``minimize`` call each hook is traced and compiled once (once
    per static part of ``args``, below) and every evaluation reuses it. A
    later call traces ``fun`` again: what ``fun`` reads at trace time
    (globals, closed-over numbers, attributes of a bound method's object)
    may have changed in between, and a result never depends on stale state.
    To share compilations across calls (many short runs of one objective),
    pass a function you jitted yourself, ``minimize(jax.jit(loss), ...)``:
    ``jax.jit`` already freezes what ``loss`` read when it was traced, by your
    choice, so the compiled value-and-gradient around it is kept, keyed on
    the jitted function's identity, x0's layout (structure, shapes, dtypes,
    devices) and the static part of ``args``. That cache holds the jitted
    function weakly (its entries go when it is garbage collected) and keeps
    at most 32 compiled functions per function, the least recently used
    dropped first.

What is traced in ``args``
    ``args`` (and the minibatch of the stochastic mode) may be any JAX
    pytree. Its array leaves (``jax.Array``, NumPy arrays and scalars) are
    traced arguments of the compiled functions: new values of the same shape
    and dtype (the next minibatch) reuse the compiled code. Every other leaf
    (Python numbers, strings, functions, the static half of an equinox
    model) is static: closed over at compile time, with one compilation per
    distinct value (compared with ``==`` when hashable, by identity
    otherwise). A last minibatch of another shape compiles once more. NumPy
    array leaves are copied to the device once per ``args`` (once per
    minibatch), not once per evaluation.

float64 and ``jax_enable_x64``
    This module never changes JAX's configuration. With 64-bit mode off (JAX's
    default), a float64 leaf (a NumPy float64 array, a Python float) is
    optimized in float32 and returned as float32, as ``jnp.asarray`` would
    make it, and a ``UserWarning`` names the leaf and the fix: call
    ``jax.config.update("jax_enable_x64", True)`` at startup.

Models
    JAX-registered pytree nodes that are not plain containers (equinox
    Modules, ``flax.struct`` dataclasses, ``FrozenDict``, ``nnx.State``) are
    opened as containers, in the order of their own JAX flattening.

    - Flax linen: ``params = variables["params"]`` is already a dict;
      ``model.apply({"params": res.x}, X)`` uses the result.
    - Flax nnx: ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``;
      ``nnx.merge(graphdef, res.x, rest)`` rebuilds the model.
    - Equinox: ``params, static = eqx.partition(model, eqx.is_inexact_array)``
      gives the parameters (non-arrays replaced by None); pass ``static`` in
      ``args`` and ``eqx.combine(params, static)`` inside ``fun``;
      ``eqx.combine(res.x, static)`` is the trained model.

Transfers
    The flat float64 vector SciPy works on crosses to the device once per
    evaluation (a float32 or float64 host array handed to the compiled
    function, or ``jax.device_put`` to x0's committed device) and the
    gradient comes back once; float32 travels as float32 and is widened on
    the host. Turning a flat vector into leaves (``res.x``, ``res.jac``, the
    ``x`` of callbacks and of ``jac=True`` functions) splits it on the host
    and copies the leaves over for a layout's first 256 times, then with a
    compiled split (one copy, split on the device): compiling that costs
    ~10 ms per leaf once, worth it only for many calls.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optree

from .core import Backend, Layout, bind, bind_least_squares, bind_root
from .core.backend import FLOAT_DTYPE_NAMES, refuse_complex
from .core.cache import CallCache, CompileCache
from .core.distributed import DISTRIBUTED_DOC, Communicator, with_distributed
from .core.tree import NAMESPACE, flatten_with_paths, format_path

__all__ = ["minimize", "least_squares", "root"]

X64_FIX = 'jax.config.update("jax_enable_x64", True)'


# ---- JAX pytree nodes that optree does not know ---------------------------

_REGISTERED: set[type] = set()
_REGISTER_LOCK = threading.Lock()


def _plain_key(key: Any) -> Any:
    """A JAX key-path entry (DictKey, GetAttrKey, SequenceKey, ...) as a plain key."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return key


def _flatten_one_level(node: Any):
    # Everything below `node` counts as a leaf: exactly one level is opened.
    keyed, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda child: child is not node)
    return [child for _, child in keyed], treedef, [_plain_key(path[0]) for path, _ in keyed]


def _unflatten_one_level(treedef: Any, children: Any) -> Any:
    return jax.tree_util.tree_unflatten(treedef, list(children))


def _is_jax_node(obj: Any) -> bool:
    """Whether JAX opens ``obj`` (a registered pytree node), for an object optree keeps whole."""
    if isinstance(obj, (jax.Array, np.ndarray, np.generic, numbers.Number, str, bytes)):
        return False
    leaves = jax.tree_util.tree_leaves(obj)
    return not (len(leaves) == 1 and leaves[0] is obj)


def _register_jax_nodes(tree: Any) -> None:
    """Teach optree, in dict_minimize's namespace, every JAX pytree node type found in ``tree``.

    Each type is opened one level by JAX's own registration, so its children,
    their key names and their order are the ones JAX gives it.
    """
    while True:  # opening a new type can reveal children of other new types
        leaves = optree.tree_leaves(tree, none_is_leaf=False, namespace=NAMESPACE)
        new = {type(v) for v in leaves if type(v) not in _REGISTERED and _is_jax_node(v)}
        if not new:
            return
        with _REGISTER_LOCK:
            for cls in new - _REGISTERED:
                optree.register_pytree_node(
                    cls, _flatten_one_level, _unflatten_one_level, namespace=NAMESPACE
                )
                _REGISTERED.add(cls)


# ---- args: array leaves are traced, everything else is static ------------


class _Static:
    """A static leaf of ``args``: equal by value when hashable, else by identity."""

    __slots__ = ("value", "_key")

    def __init__(self, value: Any):
        self.value = value
        try:
            hash(value)
            self._key = (type(value), value)
        except TypeError:
            self._key = (type(value), id(value))  # `value` is kept alive by self

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Static) and self._key == other._key


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _partition_args(args: tuple) -> tuple[list, tuple]:
    """``args`` as (traced array leaves, a hashable static part)."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic = [v for v in leaves if _is_array(v)]
    static = tuple(None if _is_array(v) else _Static(v) for v in leaves)
    return dynamic, (treedef, static)


def _rebuild_args(dynamic: list, static: tuple) -> tuple:
    treedef, markers = static
    arrays = iter(dynamic)
    return jax.tree_util.tree_unflatten(treedef, [next(arrays) if s is None else s.value for s in markers])


# ---- compiled functions, cached across minimize calls ----------------------

#: Most compiled functions kept per user function (hook kinds x layouts x
#: static args); the least recently used go first.
MAX_COMPILED_PER_FUNCTION = 32

_CACHE = CompileCache(MAX_COMPILED_PER_FUNCTION)

#: The type of what ``jax.jit`` returns.
_JITTED = type(jax.jit(lambda x: x))


def _cache_for(fun: Callable) -> CompileCache | CallCache:
    """Where one hook keeps its compiled code: across calls only for a function the user jitted.

    Anything else ``fun`` reads at trace time may change between calls, so
    it is compiled once per call (see :mod:`dict_minimize.core.cache`).
    """
    return _CACHE if isinstance(fun, _JITTED) else CallCache(MAX_COMPILED_PER_FUNCTION)


def _scalar_function(fun_ref: Callable, layout: Layout, static: tuple, floating: bool = True) -> Callable:
    """``scalar(leaves, dynamic)``: ``fun`` on x0's leaves, for tracing.

    ``fun_ref()`` is the user's ``fun`` (a weak reference: see
    :class:`~dict_minimize.core.cache.CompileCache`); ``floating`` requires a real floating value,
    which differentiation needs.
    """

    def scalar(leaves, dynamic):
        value = jnp.asarray(fun_ref()(layout.unflatten(leaves), *_rebuild_args(dynamic, static)))
        if value.size != 1:
            raise ValueError(f"fun must return a scalar; it returned an array of shape {value.shape}")
        if floating and not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(f"fun must return a real floating scalar; it returned dtype {value.dtype}")
        return value.reshape(())

    return scalar


#: What tracing raises for code that needs concrete values (``float(x)``,
#: ``np.asarray(x)``, a Python ``if`` on a value, a boolean mask), and nothing else.
_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,  # TracerBoolConversionError is one
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


# ---- the flat buffer on the device ---------------------------------------


def _split(buf: jax.Array, shapes: tuple, dtypes: tuple) -> list:
    """x0's leaves from the flat buffer (inside a traced function)."""
    leaves, start = [], 0
    for shape, dtype in zip(shapes, dtypes):
        size = math.prod(shape)
        leaves.append(buf[start : start + size].reshape(shape).astype(dtype))
        start += size
    return leaves


def _concat(leaves: list, dtype: Any) -> jax.Array:
    return jnp.concatenate([jnp.ravel(jnp.asarray(v)).astype(dtype) for v in leaves])


def _flat_output(c: Any) -> jax.Array:
    """A constraint's value as one 1-d array: a (nested) list or tuple is its items raveled, concatenated."""
    if isinstance(c, (list, tuple)):
        parts = [_flat_output(v) for v in c]
        return jnp.concatenate(parts) if parts else jnp.zeros(0)
    return jnp.ravel(jnp.asarray(c))


_split_jit = jax.jit(_split, static_argnums=(1, 2))
_concat_jit = jax.jit(_concat, static_argnums=1)

#: ``from_flat`` calls per layout before its split is compiled. Compiling
#: costs ~10 ms per leaf (one output each: 2 s at 200 leaves), once per
#: layout; splitting on the host and copying each leaf over costs ~20 us a
#: leaf more per call: compiling pays off after a few hundred calls (those
#: of a ``jac=True`` run), not for the result of one run.
SPLIT_COMPILE_AFTER = 256
_split_calls: dict = {}  # layout -> from_flat calls so far (cleared when large)


@dataclass(frozen=True)
class _Info:
    #: None: every leaf on one device (``device``), the flat buffer is split there.
    #: Otherwise each leaf's sharding (None: uncommitted), and leaves travel one by one.
    shardings: tuple | None
    device: Any  # the one device when x0 has a committed jax.Array; None: JAX's default
    transfer: np.dtype  # dtype of the flat buffer on the device (float32 or float64)


def _host_float64(array: Any) -> np.ndarray:
    """A device array as a new float64 NumPy vector (widened on the host)."""
    return np.asarray(array).astype(np.float64).reshape(-1)


class JaxBackend(Backend):
    """Leaves are ``jax.Array``; NumPy arrays and Python floats become arrays."""

    # ---- leaves -----------------------------------------------------------

    def prepare_x0(self, x0: Any) -> Any:
        _register_jax_nodes(x0)
        if not _x64_enabled():
            paths, leaves, _ = flatten_with_paths(x0, self.is_leaf)
            wide = [format_path(p) for p, v in zip(paths, leaves) if _is_float64(v)]
            if wide:
                more = f" (and {len(wide) - 1} more)" if len(wide) > 1 else ""
                warnings.warn(
                    f"{wide[0]}{more} is float64 but JAX's 64-bit mode is off, so it is optimized "
                    f"and returned as float32; to keep float64, call {X64_FIX} at startup",
                    UserWarning,
                    stacklevel=4,
                )
        return x0

    def leaf_shape_dtype(self, leaf: Any, path: str) -> tuple[tuple[int, ...], np.dtype]:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        elif isinstance(leaf, float):
            shape, dtype = (), np.dtype(np.float64)
        else:
            hint = " (for an equinox model, optimize eqx.partition(model, eqx.is_inexact_array)[0])"
            raise TypeError(
                f"{path} is {type(leaf).__name__}; x0's leaves must be floating jax arrays, NumPy "
                f"arrays or floats{hint if callable(leaf) else ''}"
            )
        if dtype.name not in FLOAT_DTYPE_NAMES:
            raise TypeError(
                f"{path} has dtype {dtype.name}; only floating dtypes "
                "(float16, bfloat16, float32, float64) can be optimized"
            )
        # float64 is float32 while JAX's 64-bit mode is off (prepare_x0 warns).
        return shape, np.dtype(jax.dtypes.canonicalize_dtype(dtype))

    def layout_info(self, leaves: list, dtypes: tuple) -> _Info:
        transfer = np.dtype(np.float64 if np.dtype(np.float64) in dtypes else np.float32)
        # Uncommitted arrays (and host leaves) go wherever JAX puts them; committed ones stay put.
        committed = [v for v in leaves if isinstance(v, jax.Array) and v.committed]
        devices = {d for v in committed for d in v.sharding.device_set}
        if all(isinstance(v.sharding, jax.sharding.SingleDeviceSharding) for v in committed):
            if len(devices) > 1:
                # JAX itself cannot compute with arrays committed to different devices.
                raise ValueError(
                    f"x0's arrays are committed to different devices ({sorted(map(str, devices))}); "
                    "put them on one device with jax.device_put, or shard them over one mesh"
                )
            return _Info(None, next(iter(devices), None), transfer)
        shardings = tuple(v.sharding if isinstance(v, jax.Array) and v.committed else None for v in leaves)
        return _Info(shardings, None, transfer)

    # ---- conversions ------------------------------------------------------

    def to_flat(self, leaves: list, layout: Layout) -> np.ndarray:
        info: _Info = layout.info
        if info.shardings is None:
            # One concatenation on the device, one copy to the host, widened there.
            return _host_float64(_concat_jit(list(leaves), info.transfer))
        return np.concatenate([_host_float64(jnp.asarray(v).astype(info.transfer)) for v in leaves])

    def _params(self, x: np.ndarray, layout: Layout, copy: bool = True) -> np.ndarray | jax.Array | list:
        """The compiled functions' input: the flat buffer, or the leaves one by one (sharded x0).

        ``copy=False`` lets a float64 buffer share ``x``'s memory: only for
        evaluations that hold on to nothing computed from it.
        """
        info: _Info = layout.info
        refuse_complex(x, "jax")
        host = np.asarray(x, dtype=np.float64).astype(info.transfer, copy=copy)
        if info.shardings is None:
            # A NumPy array goes to JAX's default device inside the jit call
            # (its C++ path: faster than a device_put first, ~15 us a call).
            return host if info.device is None else jax.device_put(host, info.device)
        # Host leaves of x0 become uncommitted arrays: jit places them beside the others.
        return [
            jnp.asarray(piece.astype(dtype)) if sharding is None else jax.device_put(piece.astype(dtype), sharding)
            for piece, dtype, sharding in zip(layout.split(host), layout.dtypes, info.shardings)
        ]

    def _leaves(self, params: Any, layout: Layout) -> list:
        """x0's leaves from :meth:`_params` output (inside a traced function)."""
        if isinstance(params, list):
            return params
        return _split(params, layout.shapes, layout.dtypes)

    def _pack(self, leaves: list, params: Any, layout: Layout) -> jax.Array | list:
        """Leaf-shaped derivatives shaped like ``params`` (inside a traced function).

        For the flat buffer, one concatenation in the compiled function: the
        gradient then leaves the device in one copy, and differentiating
        with respect to the leaves (not the buffer) keeps the backward pass
        free of one full-length pad per leaf.
        """
        if isinstance(params, list):
            return list(leaves)
        return _concat(leaves, layout.info.transfer)

    def _flat_host(self, params_like: Any, layout: Layout) -> np.ndarray:
        """A gradient or product shaped like :meth:`_params` output as new flat float64."""
        if isinstance(params_like, list):
            return np.concatenate([np.asarray(v).astype(np.float64).reshape(-1) for v in params_like])
        return _host_float64(params_like)

    def from_flat(self, x: np.ndarray, layout: Layout, requires_grad: bool = False) -> list:
        info: _Info = layout.info
        refuse_complex(x, "jax")
        if info.shardings is not None:
            return self._params(x, layout)
        calls = _split_calls[layout] = _split_calls.get(layout, 0) + 1
        if len(_split_calls) > 4096:
            _split_calls.clear()
        if calls > SPLIT_COMPILE_AFTER:
            # One host->device copy, split on the device by compiled code.
            return list(_split_jit(self._params(x, layout), layout.shapes, layout.dtypes))
        host = np.asarray(x, dtype=np.float64).astype(info.transfer)  # a new array: never aliases x
        pieces = [piece.astype(dtype, copy=False) for piece, dtype in zip(layout.split(host), layout.dtypes)]
        return jax.device_put(pieces, info.device)

    def to_numpy(self, obj: Any) -> np.ndarray:
        if isinstance(obj, jax.Array):
            arr = np.asarray(jax.device_get(obj))
            return arr.astype(np.float32) if arr.dtype.name == "bfloat16" else arr
        return np.asarray(obj)

    # ---- derivatives ------------------------------------------------------

    def _device_args(self, dynamic: list, layout: Layout) -> list:
        """NumPy leaves of ``args`` on x0's device, once per ``args`` rather than once per call."""
        info: _Info = layout.info
        if info.shardings is not None:  # jit places them beside the sharded leaves
            return dynamic
        return [jax.device_put(v, info.device) if isinstance(v, (np.ndarray, np.generic)) else v
                for v in dynamic]

    def _selector(self, kind: str, fun: Callable, layout: Layout, make: Callable) -> Callable:
        """``select(args) -> (compiled, dynamic)`` for one ``minimize`` call.

        ``make(fun_ref, static)`` builds the compiled code of one hook kind
        for one static part of ``args``; it is kept for this call, or across
        calls for a function the user jitted (:func:`_cache_for`). The driver passes the same ``args`` tuple
        until the minibatch changes, so splitting it is done once per tuple.
        """
        last: tuple | None = None  # (args, compiled, dynamic): this call's only
        cache = _cache_for(fun)

        def select(args: tuple) -> tuple[Any, list]:
            nonlocal last
            if last is None or last[0] is not args:
                dynamic, static = _partition_args(args)
                compiled = cache.get(fun, (kind, layout, static), partial(make, static=static))
                last = (args, compiled, self._device_args(dynamic, layout))
            return last[1], last[2]

        return select

    def value(self, fun: Callable, layout: Layout) -> Callable:
        def make(fun_ref, static):
            scalar = _scalar_function(fun_ref, layout, static, floating=False)
            return jax.jit(lambda params, dynamic: scalar(self._leaves(params, layout), dynamic))

        select = self._selector("value", fun, layout, make)
        eager = False

        def value(x: np.ndarray, args: tuple) -> float:
            nonlocal eager
            if not eager:
                compiled, dynamic = select(args)
                try:
                    return float(compiled(self._params(x, layout, copy=False), dynamic))
                except _TRACER_ERRORS as e:
                    # Gradient-free methods need no tracing: call fun as it is, and say so once.
                    eager = True
                    cause = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                    warnings.warn(
                        f"fun could not be traced by jax.jit ({cause}); this gradient-free run calls it "
                        "eagerly at every evaluation instead, which is slower",
                        UserWarning,
                        stacklevel=2,
                    )
            return self.to_scalar(fun(layout.unflatten(self.from_flat(x, layout)), *args))

        return value

    def value_and_grad(self, fun: Callable, layout: Layout) -> Callable:
        def make(fun_ref, static):
            # With respect to the leaves, not the flat buffer (see _pack).
            value_and_grad_of_leaves = jax.value_and_grad(_scalar_function(fun_ref, layout, static))

            def value_and_flat_grad(params, dynamic):
                value, grads = value_and_grad_of_leaves(self._leaves(params, layout), dynamic)
                return value, self._pack(grads, params, layout)

            return jax.jit(value_and_flat_grad)

        select = self._selector("value_and_grad", fun, layout, make)

        def value_and_grad(x: np.ndarray, args: tuple):
            compiled, dynamic = select(args)
            value, grad = compiled(self._params(x, layout, copy=False), dynamic)
            return float(value), self._flat_host(grad, layout)

        return value_and_grad

    def linearize_grad(self, fun: Callable, layout: Layout) -> Callable:
        def make(fun_ref, static):
            grad = jax.grad(_scalar_function(fun_ref, layout, static))

            # Forward-over-reverse: linearize the gradient at x once (its
            # residuals stay on the device), then each product runs only the
            # linear part. Both with respect to the leaves (see _pack).
            @jax.jit
            def linearize_at(params, dynamic):
                leaves = self._leaves(params, layout)
                return jax.linearize(lambda at: grad(at, dynamic), leaves)[1]

            # The linear function is a pytree (residuals as leaves, its jaxpr
            # as static data fixed by linearize_at's trace): compiled once.
            @jax.jit
            def apply(linear, p):
                return self._pack(linear(self._leaves(p, layout)), p, layout)

            return linearize_at, apply

        select = self._selector("linearize_grad", fun, layout, make)

        def linearize(x: np.ndarray, args: tuple):
            (linearize_at, apply), dynamic = select(args)
            # A copy of x: the linearization outlives this call.
            linear = linearize_at(self._params(x, layout), dynamic)

            def hvp(p: np.ndarray) -> np.ndarray:
                return self._flat_host(apply(linear, self._params(p, layout, copy=False)), layout)

            return hvp

        return linearize

    def value_and_jac(self, fun: Callable, layout: Layout) -> Callable:
        info: _Info = layout.info
        n = layout.n

        def make(fun_ref, static):
            @jax.jit
            def value_and_jac(buf, dynamic):
                def flat_value(leaves):
                    tree = layout.unflatten(leaves)
                    return _flat_output(fun_ref()(tree, *_rebuild_args(dynamic, static)))

                # With respect to the leaves, not the buffer (see _pack).
                leaves = _split(buf, layout.shapes, layout.dtypes)
                c, jvp = jax.linearize(flat_value, leaves)
                m = c.size
                if m < n:  # m vector-Jacobian products (reverse mode)
                    vjp = jax.linear_transpose(jvp, leaves)
                    jac = jax.vmap(lambda u: _concat(vjp(u)[0], buf.dtype))(jnp.eye(m, dtype=c.dtype))
                else:  # n Jacobian-vector products (forward mode)
                    jac = jax.vmap(lambda t: jvp(_split(t, layout.shapes, layout.dtypes)), out_axes=1)(
                        jnp.eye(n, dtype=buf.dtype)
                    )
                return c, jac

            return value_and_jac

        select = self._selector("value_and_jac", fun, layout, make)

        def value_and_jac_flat(x: np.ndarray, args: tuple):
            compiled, dynamic = select(args)
            # Constraints are small: always over the flat buffer on one device.
            refuse_complex(x, "jax")
            host = np.asarray(x, dtype=np.float64).astype(info.transfer)
            c, jac = jax.device_get(compiled(jax.device_put(host, info.device), dynamic))
            c = np.asarray(c).astype(np.float64)
            return c, np.asarray(jac).astype(np.float64).reshape(c.size, n)

        return value_and_jac_flat

    def vdot(self, v: np.ndarray, c: Any) -> Any:
        return jnp.sum(jnp.asarray(v) * jnp.ravel(c))

    def ravel_concat(self, tensors: list) -> Any:
        return jnp.concatenate([jnp.ravel(jnp.asarray(t)) for t in tensors])


def _x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on (globally or in a ``jax.enable_x64`` block)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def _is_float64(leaf: Any) -> bool:
    if isinstance(leaf, (np.ndarray, np.generic)):
        return leaf.dtype == np.float64
    return isinstance(leaf, float)


class JaxCommunicator(Communicator):
    """Sum all-reduce over every process of ``jax.distributed``.

    One ``multihost_utils.process_allgather`` of the buffer, then a sum in
    rank order on the host: the same bits on every process. The float64
    buffer travels as uint32 pairs, so ``jax_enable_x64`` does not matter.
    On CPU, JAX's CPU collectives must be on
    (``jax.config.update("jax_cpu_collectives_implementation", "gloo")``
    before ``jax.distributed.initialize``); this module never sets it.
    """

    def __init__(self, distributed: Any):
        if distributed is not True:
            raise TypeError(
                f"distributed must be None or True with JAX (all processes), got {type(distributed).__name__}"
            )
        initialized = getattr(jax.distributed, "is_initialized", lambda: jax.process_count() > 1)
        if not initialized():
            raise RuntimeError("distributed=True needs jax.distributed.initialize(...) first")
        from jax.experimental import multihost_utils

        self._allgather = multihost_utils.process_allgather
        self.rank = jax.process_index()
        self.size = jax.process_count()

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        words = np.ascontiguousarray(buf, dtype=np.float64).view(np.uint32)
        gathered = np.asarray(self._allgather(words)).reshape(self.size, -1)
        rows = np.ascontiguousarray(gathered, dtype=np.uint32).view(np.float64)
        total = rows[0].copy()
        for row in rows[1:]:  # rank order on every process: bitwise the same sums
            total += row
        return total


_BACKEND = JaxBackend()


minimize = with_distributed(bind(
    _BACKEND,
    __name__,
    tensors="JAX arrays",
    tensor="jax.Array",
    jac_none=(
        "``None``: value and gradient by ``jax.value_and_grad``, compiled once "
        "per call with ``jax.jit`` (across calls for a ``fun`` you jitted yourself; "
        "``fun`` must be traceable; see the module docstring)."
    ),
    hess_none=(
        "``None``: Hessian-vector products by forward-over-reverse autodiff "
        "(``jax.linearize`` of ``jax.grad``, compiled once) where the method uses them."
    ),
    cons_none="Without ``jac``, Jacobians by ``jax.linearize`` (forward or reverse, the cheaper one).",
    example="""    >>> import jax.numpy as jnp
    >>> from dict_minimize.jax_api import minimize
    >>> def rosen(x):
    ...     a, b = x["a"], x["b"]
    ...     return jnp.sum(100 * (b - a**2) ** 2 + (1 - a) ** 2)
    >>> x0 = {"a": jnp.full((3,), -1.0), "b": jnp.full((3,), 2.0)}
    >>> res = minimize(rosen, x0, method="L-BFGS-B", bounds={"b": (None, 5.0)})
    >>> res.x["a"].dtype, bool(jnp.allclose(res.x["a"], jnp.ones(3), atol=1e-3))
    (dtype('float32'), True)""",
), _BACKEND, JaxCommunicator, DISTRIBUTED_DOC.format(
    kinds="",
    true="every process of ``jax.distributed`` (``True``)",
    engine="``multihost_utils.process_allgather`` (summed in rank order)",
))


least_squares = bind_least_squares(
    _BACKEND,
    __name__,
    jac_default=None,
    tensors="JAX arrays",
    tensor="jax.Array",
    jac_none="``None`` (the default): the dense Jacobian by JAX autodiff, compiled once per call "
    "(forward mode when there are more residuals than variables).",
    example="""    >>> import jax.numpy as jnp
    >>> from dict_minimize.jax_api import least_squares
    >>> t = jnp.linspace(0.0, 1.0, 20)
    >>> y = 2.0 * jnp.exp(-1.5 * t)
    >>> def residuals(p):
    ...     return p["a"] * jnp.exp(-p["k"] * t) - y
    >>> res = least_squares(residuals, {"a": jnp.array(1.0), "k": jnp.array(1.0)})
    >>> round(float(res.x["a"]), 3), round(float(res.x["k"]), 3), res.jac.shape
    (2.0, 1.5, (20, 2))""",
)

root = bind_root(
    _BACKEND,
    __name__,
    tensors="JAX arrays",
    tensor="jax.Array",
    jac_none="``None``: the dense Jacobian by JAX autodiff (for 'hybr' and 'lm').",
    example="""    >>> import jax.numpy as jnp
    >>> from dict_minimize.jax_api import root
    >>> def equations(x):
    ...     return {"cube": x["a"] ** 3 - 8.0, "equal": x["b"] - x["a"]}
    >>> res = root(equations, {"a": jnp.array(1.0), "b": jnp.array(0.0)})
    >>> round(float(res.x["a"]), 3), round(float(res.x["b"]), 3)
    (2.0, 2.0)""",
)


# ---- argmin: the solution as a differentiable function of args ----------


class _ArgminBackend(JaxBackend):
    """The backend with argmin's two hooks: parameters are floating ``jax.Array`` (tracers too)."""

    def is_parameter(self, leaf: Any) -> bool:
        return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating)

    def implicit_function(self, forward, backward):
        avals: list = []
        wanted: list = []  # which inputs jax differentiates (symbolic zeros tell)

        @jax.custom_vjp
        def solve(*inputs):
            if any(isinstance(v, jax.core.Tracer) for v in inputs):
                raise TypeError(
                    "argmin runs SciPy on concrete values: call it outside jax.jit and jax.vmap "
                    "(jax.grad, jax.vjp and jax.jacrev of a function that calls it work)"
                )
            avals[:] = [jax.ShapeDtypeStruct(np.shape(v), v.dtype) for v in inputs]
            return tuple(forward(list(inputs)))

        def solve_fwd(*primals):
            wanted[:] = [bool(p.perturbed) for p in primals]
            return solve(*[p.value for p in primals]), None

        def host_backward(*cotangents):
            grads = backward([np.asarray(c, dtype=np.float64) for c in cotangents], list(wanted))
            return tuple(np.zeros(avals[j].shape, avals[j].dtype) if grads[j] is None
                         else np.asarray(grads[j]).astype(avals[j].dtype).reshape(avals[j].shape)
                         for j in range(len(avals)) if wanted[j])

        def solve_bwd(_, cotangents):
            cotangents = [jnp.zeros(c.aval.shape, c.aval.dtype) if isinstance(c, jax.custom_derivatives.SymbolicZero)
                          else c for c in cotangents]
            if any(isinstance(c, jax.core.Tracer) for c in cotangents):
                # Under jax.vmap (jax.jacrev) or jax.jit: one host solve per cotangent.
                shapes = tuple(a for a, w in zip(avals, wanted) if w)
                grads = iter(jax.pure_callback(host_backward, shapes, *cotangents, vmap_method="sequential"))
            else:
                grads = iter(jnp.asarray(g) for g in host_backward(*cotangents))
            # Inputs nobody differentiates get no cotangent (None: a symbolic zero).
            return tuple(next(grads) if w else None for w in wanted)

        solve.defvjp(solve_fwd, solve_bwd, symbolic_zeros=True)

        def apply(inputs: list) -> list:
            if not inputs:
                return forward([])
            return list(solve(*inputs))

        return apply


from .core.implicit import bind_argmin  # noqa: E402

__all__.append("argmin")
argmin = bind_argmin(
    _ArgminBackend(),
    __name__,
    tensors="JAX arrays",
    tensor="floating jax.Array",
    how="a ``jax.custom_vjp``: ``jax.grad``, ``jax.vjp`` and ``jax.jacrev`` work; ``jax.jit`` and "
    "``jax.vmap`` of argmin itself do not, since SciPy runs on concrete values",
    example="""    >>> import jax, jax.numpy as jnp
    >>> from dict_minimize.jax_api import argmin
    >>> def f(x, y):  # relu(y) = argmin ||x||^2 - 2 y'x subject to x >= 0
    ...     return jnp.sum(x["x"] ** 2) - 2 * jnp.sum(y * x["x"])
    >>> def relu(y):
    ...     return argmin(f, {"x": jnp.ones(3)}, args=(y,), bounds={"x": (0.0, None)})["x"]
    >>> jax.jacrev(relu)(jnp.array([1.5, -2.0, 0.5])).round(3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]""",
)
