"""The Rosenbrock function with its variables split across a dict of JAX arrays.

``dict_minimize.jax_api.minimize`` is ``scipy.optimize.minimize`` for pytrees:
the gradient comes from ``jax.value_and_grad`` (compiled once with
``jax.jit``), the Hessian-vector products of trust-krylov from
forward-over-reverse autodiff, and the result keeps x0's keys, shapes and
dtypes.

Run: ``python examples/rosenbrock_jax.py``
"""

from __future__ import annotations

import jax.numpy as jnp
from scipy.optimize import OptimizeResult

from dict_minimize.jax_api import minimize


def rosenbrock(x: dict) -> jnp.ndarray:
    """Chained Rosenbrock function over ``x["head"]`` followed by ``x["tail"]``; minimum 0 at all ones."""
    z = jnp.concatenate([x["head"], x["tail"]])
    return jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)


def main(n: int = 20, method: str = "L-BFGS-B", verbose: bool = True) -> OptimizeResult:
    """Minimize the ``n``-variable Rosenbrock function from the classic start (-1.2, 1, -1.2, 1, ...).

    Parameters
    ----------
    n : int
        Number of variables, split evenly between two dict entries.
    method : str
        Any of SciPy's methods ('L-BFGS-B', 'trust-krylov', 'Newton-CG', ...).
    verbose : bool
        Print the result.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``res.x`` is a dict of float32 ``jax.Array`` like x0.

    Examples
    --------
    >>> res = main(n=4, verbose=False)
    >>> bool(res.success), sorted(res.x)
    (True, ['head', 'tail'])
    """
    start = jnp.where(jnp.arange(n) % 2 == 0, -1.2, 1.0)
    x0 = {"head": start[: n // 2], "tail": start[n // 2 :]}
    res = minimize(rosenbrock, x0, method=method, options={"maxiter": 1000})
    if verbose:
        print(f"{method}: {res.message}")
        print(f"  f = {res.fun:.3e} after {res.nit} iterations, {res.nfev} evaluations")
        for key, value in res.x.items():
            print(f"  x[{key!r}] = {value}")
    return res


if __name__ == "__main__":
    main()
    main(method="trust-krylov")
