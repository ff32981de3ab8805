"""Shared pieces of the bounded-input examples: framework ops, an evaluation recorder, baselines.

- :func:`ops_for` gives, for ``'torch'``, ``'jax'`` or ``'tensorflow'``, the few
  tensor operations the examples' objectives are written with (so each
  objective is written once), the framework's ``dict_minimize`` module, and a
  compiled ``value_and_grad`` for the baselines.
- :class:`Recorder` counts the *real* calls of an objective and the largest
  distance from any evaluated point to its box. Objectives call
  ``ops.probe(x, recorder)`` on their input: in PyTorch that is a plain Python
  call; under ``jax.jit`` a ``jax.debug.callback`` and under ``tf.function`` a
  ``tf.numpy_function``, so compiled evaluations are counted when they run,
  not when they are traced.
- :func:`adam_clamp`, :func:`normalized_ascent`, :func:`pgd_linf`: the
  baselines, written once over NumPy arrays and a ``value_and_grad``
  function; each makes exactly ``steps`` gradient evaluations.

Adam is written out (PyTorch's ``torch.optim.Adam`` update with its default
betas (0.9, 0.999) and eps 1e-8) rather than taken from one framework so that
the three frameworks run the same baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import _digits_cnn as cnn

FRAMEWORKS = cnn.FRAMEWORKS


class Recorder:
    """Counts the real evaluations of an objective and checks each point against a box.

    Attributes
    ----------
    calls : int
        Evaluations recorded since the last :meth:`reset`.
    violation : float
        Largest ``max(lo - x, x - hi, 0)`` over every recorded point (0 when
        every point was inside its box).
    history : list of float
        The objective of each recorded evaluation, when the objective reports
        it through :meth:`value`.

    Examples
    --------
    >>> rec = Recorder(np.zeros(2), np.ones(2))
    >>> rec(np.array([0.5, 1.0])); rec(np.array([0.5, 1.5]))
    >>> rec.calls, rec.violation
    (2, 0.5)
    """

    def __init__(self, lo: Any = -np.inf, hi: Any = np.inf):
        self.reset(lo, hi)

    def reset(self, lo: Any = None, hi: Any = None) -> None:
        """Zero the counters; a new box if given."""
        if lo is not None:
            self.lo = np.asarray(lo, dtype=np.float64)
        if hi is not None:
            self.hi = np.asarray(hi, dtype=np.float64)
        self.calls = 0
        self.violation = 0.0
        self.history: list[float] = []

    def __call__(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        self.calls += 1
        below = float(np.max(self.lo - x, initial=0.0))
        above = float(np.max(x - self.hi, initial=0.0))
        self.violation = max(self.violation, below, above)

    def value(self, v: Any) -> None:
        """Record an objective value (host side)."""
        self.history.append(float(np.asarray(v)))


class Ops:
    """Tensor operations of one framework, as the examples' objectives use them.

    The examples' objectives are methods of one long-lived object holding an
    ``Ops``, so JAX and TensorFlow compile each once (dict_minimize caches
    compiled code on the function's identity).
    """

    name: str

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights


class TorchOps(Ops):
    name = "torch"

    def __init__(self, weights):
        import torch

        import dict_minimize.torch_api as api

        super().__init__(weights)
        self.torch, self.api = torch, api
        self.params = {k: torch.as_tensor(v) for k, v in weights.items()}

    def tensor(self, a):
        return self.torch.as_tensor(np.asarray(a, dtype=np.float64))

    def numpy(self, t) -> np.ndarray:
        return t.detach().cpu().numpy()

    def logits(self, x):
        return cnn.torch_logits(self.params, x)

    def features(self, x):
        return cnn.torch_features(self.params, x)

    def log_softmax(self, z):
        return self.torch.log_softmax(z, dim=-1)

    def logsumexp(self, z):
        return self.torch.logsumexp(z, dim=-1)

    def sum(self, t, axis=None):
        return t.sum() if axis is None else t.sum(dim=axis)

    def mean(self, t, axis=None):
        return t.mean() if axis is None else t.mean(dim=axis)

    def probe(self, x, recorder: Recorder):
        recorder(x.detach().numpy())
        return x

    def report(self, value, recorder: Recorder):
        recorder.value(value.detach())
        return value

    def value_and_grad(self, f: Callable) -> Callable:
        torch = self.torch

        def vg(x: np.ndarray, *args):
            xt = torch.tensor(x, requires_grad=True)
            v = f(xt, *args)
            (g,) = torch.autograd.grad(v, xt)
            return float(v.detach()), g.numpy()

        return vg


class JaxOps(Ops):
    name = "jax"

    def __init__(self, weights):
        import jax
        import jax.numpy as jnp

        import dict_minimize.jax_api as api

        if not jax.config.jax_enable_x64:
            raise RuntimeError('the examples run JAX in float64: jax.config.update("jax_enable_x64", True)')
        super().__init__(weights)
        self.jax, self.jnp, self.api = jax, jnp, api
        self.params = cnn.jax_weights(weights)

    def tensor(self, a):
        return self.jnp.asarray(np.asarray(a, dtype=np.float64))

    def numpy(self, t) -> np.ndarray:
        return np.asarray(t)

    def logits(self, x):
        return cnn.jax_logits(self.params, x)

    def features(self, x):
        return cnn.jax_features(self.params, x)

    def log_softmax(self, z):
        return self.jax.nn.log_softmax(z, axis=-1)

    def logsumexp(self, z):
        return self.jax.nn.logsumexp(z, axis=-1)

    def sum(self, t, axis=None):
        return self.jnp.sum(t, axis=axis)

    def mean(self, t, axis=None):
        return self.jnp.mean(t, axis=axis)

    def probe(self, x, recorder: Recorder):
        self.jax.debug.callback(recorder, x)
        return x

    def report(self, value, recorder: Recorder):
        self.jax.debug.callback(recorder.value, value)
        return value

    def value_and_grad(self, f: Callable) -> Callable:
        vg_jit = self.jax.jit(self.jax.value_and_grad(f))

        def vg(x: np.ndarray, *args):
            v, g = vg_jit(self.jnp.asarray(x), *args)
            return float(v), np.asarray(g)

        return vg


class TFOps(Ops):
    name = "tensorflow"

    def __init__(self, weights):
        import tensorflow as tf

        import dict_minimize.tensorflow_api as api

        super().__init__(weights)
        self.tf, self.api = tf, api
        self.params = cnn.tf_weights(weights)

    def tensor(self, a):
        return self.tf.constant(np.asarray(a, dtype=np.float64))

    def numpy(self, t) -> np.ndarray:
        return np.asarray(t)

    def logits(self, x):
        return cnn.tf_logits(self.params, x)

    def features(self, x):
        return cnn.tf_features(self.params, x)

    def log_softmax(self, z):
        return self.tf.nn.log_softmax(z, axis=-1)

    def logsumexp(self, z):
        return self.tf.reduce_logsumexp(z, axis=-1)

    def sum(self, t, axis=None):
        return self.tf.reduce_sum(t, axis=axis)

    def mean(self, t, axis=None):
        return self.tf.reduce_mean(t, axis=axis)

    def _host(self, fn, t):
        # A stateful numpy_function: tf.function runs it even though its
        # output is unused (automatic control dependencies).
        def call(a):
            fn(a)
            return np.float64(0.0)

        self.tf.numpy_function(call, [t], self.tf.float64, stateful=True)

    def probe(self, x, recorder: Recorder):
        self._host(recorder, x)
        return x

    def report(self, value, recorder: Recorder):
        self._host(recorder.value, value)
        return value

    def value_and_grad(self, f: Callable) -> Callable:
        tf = self.tf

        @tf.function(reduce_retracing=True)
        def vg_tf(x, *args):
            with tf.GradientTape() as tape:
                tape.watch(x)
                v = f(x, *args)
            return v, tape.gradient(v, x)

        def vg(x: np.ndarray, *args):
            v, g = vg_tf(tf.constant(x), *args)
            return float(v), g.numpy()

        return vg


def ops_for(framework: str, weights: dict[str, np.ndarray] | None = None) -> Ops:
    """The :class:`Ops` of ``framework`` with the digits CNN's weights loaded.

    JAX needs 64-bit mode: this turns it on (the examples work in float64).

    Examples
    --------
    >>> ops = ops_for("torch")
    >>> ops.logits(ops.tensor(np.zeros((2, 8, 8)))).shape
    torch.Size([2, 10])
    """
    if weights is None:
        weights = cnn.load_weights()
    if framework == "torch":
        return TorchOps(weights)
    if framework == "jax":
        import jax

        if not jax.config.jax_enable_x64:  # (a caller's jax.enable_x64 context is kept as it is)
            jax.config.update("jax_enable_x64", True)
        return JaxOps(weights)
    if framework == "tensorflow":
        return TFOps(weights)
    raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")


# ----------------------------------------------------------------------------- baselines


def pgd_linf(vg: Callable, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float, steps: int,
             args: tuple = (), seed: int = 0) -> np.ndarray:
    """Madry et al. (2018) PGD *ascent* on ``vg``'s value: random start, sign steps, projection.

    Step size ``2.5 * eps / steps``; the start is uniform in ``[x - eps, x + eps]``
    projected on ``[lo, hi]``. Exactly ``steps`` gradient evaluations.
    """
    rng = np.random.default_rng(seed)
    z = np.clip(x + rng.uniform(-eps, eps, size=x.shape), lo, hi)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        _, g = vg(z, *args)
        z = np.clip(z + alpha * np.sign(g), lo, hi)
    return z


def adam_clamp(vg: Callable, x0: np.ndarray, lo: Any, hi: Any, lr: float, steps: int,
               args: tuple = ()) -> np.ndarray:
    """Adam *descent* on ``vg``'s value, clamping to ``[lo, hi]`` after every step.

    ``torch.optim.Adam``'s update (betas 0.9, 0.999, eps 1e-8, bias-corrected),
    exactly ``steps`` gradient evaluations; returns the last iterate.
    """
    z = np.array(x0, dtype=np.float64)
    m = np.zeros_like(z)
    v = np.zeros_like(z)
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        _, g = vg(z, *args)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
        z = np.clip(z - step, lo, hi)
    return z


def normalized_ascent(vg: Callable, x0: np.ndarray, lo: Any, hi: Any, lr: float, steps: int,
                      args: tuple = ()) -> np.ndarray:
    """Gradient *descent* on ``vg``'s value with the step normalized by the gradient's std, clamped.

    The lucid / Keras feature-visualization trick: ``x -= lr * g / (std(g) + 1e-8)``,
    then clip to ``[lo, hi]``; exactly ``steps`` gradient evaluations.
    """
    z = np.array(x0, dtype=np.float64)
    for _ in range(steps):
        _, g = vg(z, *args)
        z = np.clip(z - lr * g / (g.std() + 1e-8), lo, hi)
    return z


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """``run()`` and its wall-clock seconds."""
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start
