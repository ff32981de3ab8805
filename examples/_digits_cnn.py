"""The small digits CNN that the bounded-input examples attack and visualize.

Data: scikit-learn's 8x8 ``load_digits``, pixels divided by 16 so that every
image lies in [0, 1]^(8x8), split once into 1437 training and 360 test images
(``train_test_split(test_size=0.2, stratify=y, random_state=0)``).

Model (9,898 parameters, GELU so that the objectives are smooth)::

    conv 1->16, 3x3, padding 1      (16, 8, 8)
    GELU
    conv 16->32, 3x3, stride 2, padding 1   (32, 4, 4)
    GELU
    linear 512 -> 10                logits

Weights are trained in PyTorch through :func:`dict_minimize.torch_api.minimize`
(full-batch L-BFGS-B on mean cross-entropy + ``1e-4/2 ||W||^2``, float64) by
``python examples/_digits_cnn.py``, which writes ``examples/digits_cnn.npz``.
The examples load that file, so nothing trains at run time. The same forward
pass is written here in PyTorch, JAX and TensorFlow; the JAX and TensorFlow
models are *given the PyTorch weights* (transferred, not retrained; the
kernels are transposed for TensorFlow's NHWC layout) and their test accuracy
is checked to be the same.

Framework imports happen inside the functions that need them, so the JAX
example never imports PyTorch and so on.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any, NamedTuple

import numpy as np

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_cnn.npz")
WEIGHT_DECAY = 1e-4
FRAMEWORKS = ("torch", "jax", "tensorflow")


class Digits(NamedTuple):
    """Images ``(n, 8, 8)`` float64 in [0, 1] and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def load_split() -> Digits:
    """The fixed 1437/360 split of scikit-learn's digits, pixels in [0, 1].

    Examples
    --------
    >>> d = load_split()
    >>> d.x_train.shape, d.x_test.shape, float(d.x_test.max()) <= 1.0
    ((1437, 8, 8), (360, 8, 8), True)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Digits(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64))


# ----------------------------------------------------------------------------- torch


def torch_init(seed: int = 0) -> dict[str, Any]:
    """PyTorch's default initialization of the model's layers, seeded, float64."""
    import torch

    torch.manual_seed(seed)
    conv1, conv2 = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
    fc = torch.nn.Linear(512, 10)
    params = {}
    for name, layer in (("conv1", conv1), ("conv2", conv2), ("fc", fc)):
        params[f"{name}.weight"] = layer.weight.detach().double().clone()
        params[f"{name}.bias"] = layer.bias.detach().double().clone()
    return params


def torch_features(params: dict, x):
    """Activations after each GELU: ``(n, 16, 8, 8)`` and ``(n, 32, 4, 4)``."""
    import torch.nn.functional as F

    h1 = F.gelu(F.conv2d(x[:, None], params["conv1.weight"], params["conv1.bias"], padding=1))
    h2 = F.gelu(F.conv2d(h1, params["conv2.weight"], params["conv2.bias"], stride=2, padding=1))
    return h1, h2


def torch_logits(params: dict, x):
    """Logits ``(n, 10)`` of images ``x`` ``(n, 8, 8)``."""
    _, h2 = torch_features(params, x)
    return h2.flatten(1) @ params["fc.weight"].T + params["fc.bias"]


def train_torch(maxiter: int = 300, seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Train the CNN with full-batch L-BFGS-B through ``torch_api.minimize``.

    Returns
    -------
    weights : dict of str to np.ndarray
        Trained parameters (PyTorch layout, float64).
    info : dict
        ``nit``, ``nfev``, ``wall_s``, ``train_loss``, ``test_accuracy``.

    Examples
    --------
    >>> weights, info = train_torch(maxiter=5)
    >>> sorted(weights)[:2], info["nfev"] >= 5
    (['conv1.bias', 'conv1.weight'], True)
    """
    import torch
    import torch.nn.functional as F

    from dict_minimize.torch_api import minimize

    data = load_split()
    x = torch.as_tensor(data.x_train)
    y = torch.as_tensor(data.y_train)

    def loss(params, x, y):
        penalty = sum((params[k] ** 2).sum() for k in params if k.endswith("weight"))
        return F.cross_entropy(torch_logits(params, x), y) + 0.5 * WEIGHT_DECAY * penalty

    start = time.perf_counter()
    res = minimize(loss, torch_init(seed), args=(x, y), method="L-BFGS-B", options={"maxiter": maxiter})
    wall = time.perf_counter() - start
    weights = {k: v.detach().numpy() for k, v in res.x.items()}
    info = {
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "wall_s": wall,
        "train_loss": float(res.fun),
        "test_accuracy": accuracy("torch", weights),
    }
    return weights, info


# ----------------------------------------------------------------------------- jax


def jax_weights(weights: dict[str, np.ndarray]) -> dict:
    """The PyTorch weights as ``jax.Array`` float64 (needs ``jax_enable_x64``)."""
    import jax.numpy as jnp

    return {k: jnp.asarray(v) for k, v in weights.items()}


def jax_features(params: dict, x):
    """JAX twin of :func:`torch_features` (NCHW, OIHW, cross-correlation as in PyTorch)."""
    import jax
    from jax import lax

    dims = ("NCHW", "OIHW", "NCHW")
    h1 = lax.conv_general_dilated(x[:, None], params["conv1.weight"], (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=dims)
    h1 = jax.nn.gelu(h1 + params["conv1.bias"][None, :, None, None], approximate=False)
    h2 = lax.conv_general_dilated(h1, params["conv2.weight"], (2, 2), ((1, 1), (1, 1)),
                                  dimension_numbers=dims)
    h2 = jax.nn.gelu(h2 + params["conv2.bias"][None, :, None, None], approximate=False)
    return h1, h2


def jax_logits(params: dict, x):
    """JAX twin of :func:`torch_logits`."""
    _, h2 = jax_features(params, x)
    return h2.reshape(h2.shape[0], -1) @ params["fc.weight"].T + params["fc.bias"]


# ----------------------------------------------------------------------------- tensorflow


def tf_weights(weights: dict[str, np.ndarray]) -> dict:
    """The PyTorch weights as float64 ``tf.Tensor``; kernels OIHW -> HWIO for NHWC convs."""
    import tensorflow as tf

    out = {}
    for k, v in weights.items():
        if v.ndim == 4:
            v = v.transpose(2, 3, 1, 0)
        out[k] = tf.constant(v, dtype=tf.float64)
    return out


def tf_features(params: dict, x):
    """TensorFlow twin of :func:`torch_features`; returns NCHW like the others.

    ``padding=[[0,0],[1,1],[1,1],[0,0]]`` (explicit, as PyTorch's ``padding=1``):
    TensorFlow's ``'SAME'`` would pad a stride-2 conv on the bottom/right only.
    """
    import tensorflow as tf

    pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
    h1 = tf.nn.conv2d(x[..., None], params["conv1.weight"], 1, pad) + params["conv1.bias"]
    h1 = tf.nn.gelu(h1, approximate=False)
    h2 = tf.nn.conv2d(h1, params["conv2.weight"], 2, pad) + params["conv2.bias"]
    h2 = tf.nn.gelu(h2, approximate=False)
    return tf.transpose(h1, (0, 3, 1, 2)), tf.transpose(h2, (0, 3, 1, 2))


def tf_logits(params: dict, x):
    """TensorFlow twin of :func:`torch_logits` (flattens in PyTorch's C, H, W order)."""
    import tensorflow as tf

    _, h2 = tf_features(params, x)
    flat = tf.reshape(h2, (tf.shape(h2)[0], -1))
    return tf.matmul(flat, params["fc.weight"], transpose_b=True) + params["fc.bias"]


# ----------------------------------------------------------------------------- shared


def load_weights(path: str = WEIGHTS_PATH) -> dict[str, np.ndarray]:
    """The committed trained weights (``python examples/_digits_cnn.py`` rewrites them)."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def logits_numpy(framework: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of NumPy images ``x`` ``(n, 8, 8)`` computed in ``framework``."""
    if framework == "torch":
        import torch

        params = {k: torch.as_tensor(v) for k, v in weights.items()}
        with torch.no_grad():
            return torch_logits(params, torch.as_tensor(x)).numpy()
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        if not jax.config.jax_enable_x64:
            raise RuntimeError('the examples run JAX in float64: jax.config.update("jax_enable_x64", True)')
        return np.asarray(jax_logits(jax_weights(weights), jnp.asarray(x)))
    if framework == "tensorflow":
        import tensorflow as tf

        return tf_logits(tf_weights(weights), tf.constant(x, dtype=tf.float64)).numpy()
    raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")


def accuracy(framework: str, weights: dict[str, np.ndarray]) -> float:
    """Test accuracy of ``weights`` on the 360 test images, computed in ``framework``."""
    data = load_split()
    return float((logits_numpy(framework, weights, data.x_test).argmax(1) == data.y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maxiter", type=int, default=300)
    parser.add_argument("--out", default=WEIGHTS_PATH, help="where to write the weights (.npz)")
    args = parser.parse_args()
    weights, info = train_torch(args.maxiter)
    np.savez(args.out, **weights)
    print(f"trained in torch: {info}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
