"""The backend harness: every contract test runs once per installed backend.

A backend registers by adding one ``Harness`` factory to ``_FACTORIES``;
the contract suite in ``test_contract*.py`` then runs on it unchanged.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from scipy.optimize import OptimizeResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # On a shared 2-core machine OpenBLAS's spinning threads slow SciPy's
    # small dense steps ~10x; the tests want one BLAS thread.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
except ImportError:  # pragma: no cover - scikit-learn (test extra) brings it
    pass


@dataclass
class Harness:
    """How the shared tests talk to one backend.

    Attributes
    ----------
    name : str
        'numpy', 'torch', 'tensorflow' or 'jax'.
    minimize : callable
        The backend's ``minimize``.
    asarray : callable
        ``asarray(array_like, dtype_name='float64')`` -> a native tensor.
    to_numpy : callable
        Native tensor -> ``np.ndarray``.
    is_native : callable
        Whether an object is this backend's tensor type.
    dtype_name : callable
        Native tensor -> 'float32', 'float64', ...
    ops : SimpleNamespace
        ``sum, exp, sin, cos, sqrt, log, tanh, reshape, stack`` in the framework.
    autodiff : bool
        Whether ``jac=None`` means autodiff (False for NumPy).
    dtypes : tuple of str
        Floating dtypes the backend supports.
    int_tensor, complex_tensor, bool_tensor : callable
        Make a bad leaf of that kind (``None`` if the framework has none).
    """

    name: str
    minimize: Callable
    asarray: Callable
    to_numpy: Callable
    is_native: Callable
    dtype_name: Callable
    ops: SimpleNamespace
    autodiff: bool
    dtypes: tuple = ("float32", "float64")
    int_tensor: Callable | None = None
    complex_tensor: Callable | None = None
    bool_tensor: Callable | None = None
    extra: dict = field(default_factory=dict)


def _numpy() -> Harness:
    from dict_minimize import numpy_api

    return Harness(
        name="numpy",
        minimize=numpy_api.minimize,
        asarray=lambda a, dtype="float64": np.array(a, dtype=dtype),
        to_numpy=np.asarray,
        is_native=lambda t: isinstance(t, np.ndarray),
        dtype_name=lambda t: str(t.dtype),
        ops=SimpleNamespace(sum=np.sum, exp=np.exp, sin=np.sin, cos=np.cos, sqrt=np.sqrt,
                            log=np.log, tanh=np.tanh, reshape=np.reshape, stack=np.stack),
        autodiff=False,
        dtypes=("float16", "float32", "float64"),
        int_tensor=lambda: np.arange(3),
        complex_tensor=lambda: np.ones(3, dtype=complex),
        bool_tensor=lambda: np.ones(3, dtype=bool),
    )


def _torch() -> Harness:
    import torch

    from dict_minimize import torch_api

    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
          "float32": torch.float32, "float64": torch.float64}
    return Harness(
        name="torch",
        minimize=torch_api.minimize,
        asarray=lambda a, dtype="float64": torch.tensor(np.asarray(a, dtype=np.float64), dtype=dt[dtype]),
        to_numpy=lambda t: t.detach().cpu().float().numpy() if t.dtype in (torch.float16, torch.bfloat16)
        else t.detach().cpu().numpy(),
        is_native=lambda t: isinstance(t, torch.Tensor),
        dtype_name=lambda t: str(t.dtype).replace("torch.", ""),
        ops=SimpleNamespace(sum=torch.sum, exp=torch.exp, sin=torch.sin, cos=torch.cos,
                            sqrt=torch.sqrt, log=torch.log, tanh=torch.tanh,
                            reshape=torch.reshape, stack=torch.stack),
        autodiff=True,
        dtypes=("float16", "bfloat16", "float32", "float64"),
        int_tensor=lambda: torch.arange(3),
        complex_tensor=lambda: torch.ones(3, dtype=torch.complex64),
        bool_tensor=lambda: torch.ones(3, dtype=torch.bool),
    )


def _tensorflow() -> Harness:
    import tensorflow as tf

    from dict_minimize import tensorflow_api

    return Harness(
        name="tensorflow",
        minimize=tensorflow_api.minimize,
        asarray=lambda a, dtype="float64": tf.constant(np.asarray(a, dtype=np.float64), dtype=getattr(tf, dtype)),
        to_numpy=lambda t: np.asarray(t.numpy() if hasattr(t, "numpy") else t),
        is_native=lambda t: isinstance(t, (tf.Tensor, tf.Variable)),
        dtype_name=lambda t: t.dtype.name,
        ops=SimpleNamespace(sum=tf.reduce_sum, exp=tf.exp, sin=tf.sin, cos=tf.cos,
                            sqrt=tf.sqrt, log=tf.math.log, tanh=tf.tanh,
                            reshape=tf.reshape, stack=tf.stack),
        autodiff=True,
        dtypes=("float16", "bfloat16", "float32", "float64"),
        int_tensor=lambda: tf.range(3),
        complex_tensor=lambda: tf.ones(3, dtype=tf.complex64),
        bool_tensor=lambda: tf.ones(3, dtype=tf.bool),
    )


def _jax() -> Harness:
    import jax
    import jax.numpy as jnp

    from dict_minimize import jax_api

    return Harness(
        name="jax",
        minimize=jax_api.minimize,
        asarray=lambda a, dtype="float64": jnp.asarray(np.asarray(a, dtype=np.float64), dtype=getattr(jnp, dtype)),
        to_numpy=lambda t: np.asarray(t),
        is_native=lambda t: isinstance(t, jax.Array),
        dtype_name=lambda t: str(t.dtype),
        ops=SimpleNamespace(sum=jnp.sum, exp=jnp.exp, sin=jnp.sin, cos=jnp.cos, sqrt=jnp.sqrt,
                            log=jnp.log, tanh=jnp.tanh, reshape=jnp.reshape, stack=jnp.stack),
        autodiff=True,
        dtypes=("float16", "bfloat16", "float32", "float64"),
        int_tensor=lambda: jnp.arange(3),
        complex_tensor=lambda: jnp.ones(3, dtype=jnp.complex64),
        bool_tensor=lambda: jnp.ones(3, dtype=bool),
    )


_FACTORIES = {"numpy": _numpy, "torch": _torch, "tensorflow": _tensorflow, "jax": _jax}


def _available(name: str) -> bool:
    try:
        importlib.import_module(name)  # each backend is named after its framework
        importlib.import_module(f"dict_minimize.{name}_api")
    except ImportError:
        return False
    return True


BACKENDS = [name for name in _FACTORIES if _available(name)]
AUTODIFF_BACKENDS = [name for name in BACKENDS if name != "numpy"]
_CACHE: dict[str, Harness] = {}


def harness(name: str) -> Harness:
    if name not in _CACHE:
        _CACHE[name] = _FACTORIES[name]()
    return _CACHE[name]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Harness:
    """Every installed backend."""
    return harness(request.param)


@pytest.fixture(params=AUTODIFF_BACKENDS)
def ad_backend(request) -> Harness:
    """Every installed backend with autodiff (all but NumPy)."""
    return harness(request.param)


def float64_scope(h: Harness):
    """A context in which ``h`` computes in float64 (JAX's x64 mode; a no-op elsewhere)."""
    if h.name == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.fixture
def be(backend):
    """Every backend (NumPy included), in float64."""
    with float64_scope(backend):
        yield backend


@pytest.fixture
def ad(ad_backend):
    """Every autodiff backend, in float64."""
    with float64_scope(ad_backend):
        yield ad_backend


def capture_scipy_call(monkeypatch, run: bool = False) -> dict:
    """Record what the driver hands ``scipy.optimize.minimize``; with ``run``, SciPy then runs it."""
    from dict_minimize.core import driver

    seen, real = {}, driver.scipy_minimize

    def spy(fun, x0, **kwargs):
        seen.update(kwargs, fun=fun, x0=np.array(x0, copy=True))
        if run:
            return real(fun, x0, **kwargs)
        return OptimizeResult(x=np.array(x0, copy=True), fun=0.0, success=False, status=0,
                              message="captured", nit=0)

    # The driver binds scipy.optimize.minimize once, at import: patch its name.
    monkeypatch.setattr(driver, "scipy_minimize", spy)
    return seen


class PointLog:
    """Every point at which an objective really runs, recorded on the host.

    Call ``log(*tensors)`` inside ``fun``: a host callback in the compiled
    function (``jax.debug.callback``, ``tf.py_function``) or a plain append
    when the framework runs eagerly, so a compiled objective is counted per
    execution, not per trace.
    """

    def __init__(self, h: Harness):
        self.h = h
        self.points: list[tuple] = []

    def _append(self, *arrays) -> None:
        self.points.append(tuple(np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])))

    def __call__(self, *tensors) -> None:
        if self.h.name == "jax":
            import jax

            jax.debug.callback(self._append, *tensors)
        elif self.h.name == "tensorflow":
            import tensorflow as tf

            def record(*ts):
                self._append(*(t.numpy() for t in ts))
                return []

            tf.py_function(record, list(tensors), Tout=[])
        else:
            self._append(*(self.h.to_numpy(t) for t in tensors))


def pytest_report_header(config):
    return f"dict_minimize backends under test: {', '.join(BACKENDS)}"
