"""An MLP on MNIST-1D, trained full-batch with L-BFGS-B through ``jax_api.minimize``.

The weights are a plain dict of ``jax.Array``s. ``minimize`` compiles the
loss's value and gradient once with ``jax.jit`` (the training arrays are
traced arguments, the weight decay a static one) and SciPy's L-BFGS-B does
the rest: no learning rate, no schedule. The data set is generated locally
(``mnist1d.data.make_dataset``; nothing is downloaded).

Run: ``python examples/mnist1d_mlp_jax.py`` (all 4000 training signals, 1000
test signals), or ``--n-train 400 --maxiter 20`` for a quick look. At full
size the 40-100-100-10 MLP (the PyTorch and TensorFlow examples' shape)
reaches 71.5% test accuracy in 1500 iterations, in about 13 s on one CPU core.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _data import load_mnist1d  # examples/_data.py

from dict_minimize.jax_api import minimize


def init_mlp(sizes: tuple[int, ...], seed: int = 0) -> dict[str, jax.Array]:
    """Glorot-uniform weights and zero biases, ``{"w0", "b0", "w1", ...}`` in float32."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params[f"w{i}"] = jnp.asarray(rng.uniform(-limit, limit, size=(fan_in, fan_out)), jnp.float32)
        params[f"b{i}"] = jnp.zeros(fan_out, jnp.float32)
    return params


def logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The MLP's class scores: GELU hidden layers (smooth, which quasi-Newton methods like)."""
    n_layers = len(params) // 2
    h = x
    for i in range(n_layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            h = jax.nn.gelu(h)
    return h


def loss(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, weight_decay: float) -> jax.Array:
    """Mean cross-entropy plus ``weight_decay`` times the squared norm of the weight matrices."""
    log_p = jax.nn.log_softmax(logits(params, x))
    ce = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))
    penalty = sum(jnp.sum(w**2) for k, w in params.items() if k.startswith("w"))
    return ce + weight_decay * penalty


def accuracy(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(logits(params, x), axis=1) == y))


def main(
    n_train: int | None = None,
    maxiter: int = 1500,
    hidden: tuple[int, ...] = (100, 100),
    weight_decay: float = 3e-3,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Train and evaluate.

    Parameters
    ----------
    n_train : int, optional
        Training signals to use (the first ones; all 4000 by default).
    maxiter : int
        L-BFGS-B iterations.
    hidden : tuple of int
        Hidden layer widths.
    weight_decay : float
        L2 penalty on the weight matrices.
    seed : int
        Seed of the initial weights.
    verbose : bool
        Print a summary.

    Returns
    -------
    dict
        ``test_accuracy``, ``train_accuracy``, ``initial_loss``, ``final_loss``,
        ``nit``, ``nfev``, ``seconds`` (wall time of ``minimize``, compilation
        included), ``message``.
    """
    data = load_mnist1d(n_train=n_train)
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train, jnp.int32)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test, jnp.int32)
    params0 = init_mlp((data.x_train.shape[1], *hidden, data.n_classes), seed)
    args = (x_train, y_train, weight_decay)

    start = time.perf_counter()
    res = minimize(loss, params0, args=args, method="L-BFGS-B", options={"maxiter": maxiter})
    seconds = time.perf_counter() - start

    out = {
        "test_accuracy": accuracy(res.x, x_test, y_test),
        "train_accuracy": accuracy(res.x, x_train, y_train),
        "initial_loss": float(loss(params0, *args)),
        "final_loss": float(res.fun),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "seconds": seconds,
        "message": str(res.message),
    }
    if verbose:
        n_params = sum(v.size for v in params0.values())
        print(
            f"MNIST-1D MLP {hidden}, {n_params} parameters, {len(data.y_train)} training signals, "
            f"L-BFGS-B full batch\n"
            f"  loss {out['initial_loss']:.4f} -> {out['final_loss']:.4f} in {out['nit']} iterations "
            f"({out['nfev']} evaluations), {seconds:.1f} s\n"
            f"  train accuracy {out['train_accuracy']:.3f}, test accuracy {out['test_accuracy']:.3f}"
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--maxiter", type=int, default=1500)
    parser.add_argument("--weight-decay", type=float, default=3e-3)
    parsed = parser.parse_args()
    main(n_train=parsed.n_train, maxiter=parsed.maxiter, weight_decay=parsed.weight_decay)
