"""The headline example in TensorFlow: Rosenbrock split across a dict, bounded per key.

The gradient comes from ``tf.GradientTape`` in a ``tf.function`` traced once;
the same objective is then solved with trust-krylov, whose Hessian-vector
products come from forward-over-reverse autodiff.

Run: ``python examples/rosenbrock_tensorflow.py``
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import tensorflow as tf  # noqa: E402

from dict_minimize.tensorflow_api import minimize  # noqa: E402  (was: from scipy.optimize import minimize)


def rosen(x: dict[str, tf.Tensor]) -> tf.Tensor:
    """Rosenbrock over the concatenation of the dict's tensors (minimum: all ones)."""
    v = tf.concat([tf.reshape(x["head"], [-1]), tf.reshape(x["tail"], [-1])], axis=0)
    return tf.reduce_sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)


def main(n_head: int = 4, n_tail: int = 6, verbose: bool = True):
    """Solve with L-BFGS-B (float32, bounds on one key) and trust-krylov (float64).

    Returns
    -------
    tuple of OptimizeResult
        The L-BFGS-B and the trust-krylov results.
    """
    x0 = {"head": tf.fill([n_head], -1.0), "tail": tf.zeros([2, n_tail // 2])}
    res = minimize(rosen, x0, method="L-BFGS-B", bounds={"tail": (-2.0, 2.0)})

    x0_64 = {key: tf.cast(value, tf.float64) for key, value in x0.items()}
    res_newton = minimize(rosen, x0_64, method="trust-krylov", options={"gtol": 1e-10})
    if verbose:
        for name, r in (("L-BFGS-B", res), ("trust-krylov", res_newton)):
            print(f"{name}: success={r.success} nit={r.nit} nfev={r.nfev} fun={r.fun:.3e}")
            for key, value in r.x.items():
                values = value.numpy().ravel().round(6).tolist()
                print(f"  {key}: {value.dtype.name} {tuple(value.shape)} {values}")
    return res, res_newton


if __name__ == "__main__":
    main()
