"""The headline example in NumPy: the same Rosenbrock over a dict, gradient by hand (jac=True).

NumPy has no autodiff; ``jac=None`` would mean SciPy's finite differences.
Run: ``python examples/rosenbrock_numpy.py``
"""

import numpy as np

from dict_minimize.numpy_api import minimize  # was: from scipy.optimize import minimize


def rosen_and_grad(x: dict[str, np.ndarray]):
    """Rosenbrock value and gradient dict over the concatenated leaves."""
    sizes = [x["head"].size, x["tail"].size]
    v = np.concatenate([x["head"].ravel(), x["tail"].ravel()])
    value = np.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)
    g = np.zeros_like(v)
    g[:-1] += -400.0 * v[:-1] * (v[1:] - v[:-1] ** 2) - 2.0 * (1.0 - v[:-1])
    g[1:] += 200.0 * (v[1:] - v[:-1] ** 2)
    head, tail = np.split(g, [sizes[0]])
    return value, {"head": head.reshape(x["head"].shape), "tail": tail.reshape(x["tail"].shape)}


def main(n_head: int = 4, n_tail: int = 6, verbose: bool = True):
    x0 = {"head": np.full(n_head, -1.0), "tail": np.zeros((2, n_tail // 2))}
    res = minimize(rosen_and_grad, x0, jac=True, method="L-BFGS-B", bounds={"tail": (-2.0, 2.0)},
                   options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-8})
    if verbose:
        print(f"success={res.success} nit={res.nit} nfev={res.nfev} fun={res.fun:.3e}")
        for key, value in res.x.items():
            print(f"  {key}: {value.dtype} {value.shape} {value.ravel().tolist()}")
    return res


if __name__ == "__main__":
    main()
