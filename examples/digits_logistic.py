"""Multinomial logistic regression on scikit-learn's digits, checked against scikit-learn.

The same convex objective is minimized twice:

- with :func:`dict_minimize.torch_api.minimize` (L-BFGS-B, float64) over
  ``{"weight": (10, 64), "bias": (10,)}``;
- with ``sklearn.linear_model.LogisticRegression(solver="lbfgs")``.

scikit-learn documents its objective as ``C * sum_i log_loss_i + 1/2 ||W||^2``
(intercept not penalized). It actually minimizes that divided by ``C * n``,
``mean_i log_loss_i + 1 / (2 C n) ||W||^2`` (``sklearn/linear_model/_logistic.py``:
``l2_reg_strength = 1 / (C * sw_sum)``), which has the same minimizer and is
better scaled; :func:`objective` is that mean form, and both solutions are
scored with it. ``log_loss_i = -log softmax(W x_i + b)[y_i]`` over all 10
classes (scikit-learn's multinomial, not one-vs-rest).

Run ``python examples/digits_logistic.py``; it prints both losses and their
relative difference (1.3e-10 here; the test checks < 2e-10).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import torch

from _data import load_digits_data
from dict_minimize.torch_api import minimize


def objective(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, C: float) -> torch.Tensor:
    """scikit-learn's L2 multinomial logistic objective, mean form.

    ``mean_i -log softmax(x_i W^T + b)[y_i] + ||W||^2 / (2 C n)``; the bias is not penalized.

    Examples
    --------
    >>> x, y = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    >>> zeros = {"weight": torch.zeros(2, 2, dtype=torch.float64),
    ...          "bias": torch.zeros(2, dtype=torch.float64)}
    >>> round(float(objective(zeros, x, y, C=1.0)), 6)  # log(2)
    0.693147
    """
    logits = x @ params["weight"].T + params["bias"]
    data_term = torch.nn.functional.cross_entropy(logits, y)
    return data_term + (params["weight"] ** 2).sum() / (2.0 * C * x.shape[0])


def fit_dict_minimize(x: torch.Tensor, y: torch.Tensor, C: float, n_classes: int) -> tuple[dict, Any]:
    """Minimize :func:`objective` from zeros with L-BFGS-B, converged well past SciPy's defaults.

    SciPy's default ``gtol=1e-5`` stops about 3e-6 (relative) above the
    optimum here; ``gtol=1e-8, ftol=1e-12`` gets within about 1e-10.
    """
    x0 = {
        "weight": torch.zeros(n_classes, x.shape[1], dtype=torch.float64),
        "bias": torch.zeros(n_classes, dtype=torch.float64),
    }
    res = minimize(objective, x0, args=(x, y, C), method="L-BFGS-B",
                   options={"maxiter": 10_000, "ftol": 1e-12, "gtol": 1e-8})
    return res.x, res


def fit_sklearn(x: np.ndarray, y: np.ndarray, C: float) -> dict[str, torch.Tensor]:
    """scikit-learn's solution, as a params dict."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(solver="lbfgs", C=C, tol=1e-14, max_iter=100_000)
    with warnings.catch_warnings():
        # With tol this small L-BFGS-B stops on its relative-reduction test and
        # scikit-learn warns although the objective no longer moves.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return {"weight": torch.from_numpy(model.coef_.copy()), "bias": torch.from_numpy(model.intercept_.copy())}


def main(C: float = 1.0, verbose: bool = True) -> dict[str, float]:
    """Fit both, score both with :func:`objective`, print and return the comparison.

    Parameters
    ----------
    C : float
        scikit-learn's inverse regularization strength.
    verbose : bool
        Print the losses.

    Returns
    -------
    dict of str to float
        ``loss_dict_minimize``, ``loss_sklearn``, ``relative_difference``
        (``|a - b| / |b|``), ``accuracy_dict_minimize``, ``accuracy_sklearn``
        (training accuracy), ``nit``, ``nfev`` and ``wall_time_s`` of the
        dict_minimize run.

    Examples
    --------
    >>> out = main(verbose=False)
    >>> out["relative_difference"] < 1e-6
    True
    """
    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C must be a positive number, got {C!r}")
    data = load_digits_data("float64")
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)

    start = time.perf_counter()
    ours, res = fit_dict_minimize(x, y, C, data.n_classes)
    seconds = time.perf_counter() - start
    theirs = fit_sklearn(data.x_train, data.y_train, C)

    with torch.no_grad():
        loss_ours = float(objective(ours, x, y, C))
        loss_theirs = float(objective(theirs, x, y, C))

        def accuracy(params):
            return float(((x @ params["weight"].T + params["bias"]).argmax(1) == y).double().mean())

        out = {
            "loss_dict_minimize": loss_ours,
            "loss_sklearn": loss_theirs,
            "relative_difference": abs(loss_ours - loss_theirs) / abs(loss_theirs),
            "accuracy_dict_minimize": accuracy(ours),
            "accuracy_sklearn": accuracy(theirs),
            "nit": int(res.nit),
            "nfev": int(res.nfev),
            "wall_time_s": seconds,
        }
    if verbose:
        print(f"digits, multinomial logistic regression, C={C}: {x.shape[0]} samples, {x.shape[1]} features")
        print(f"  dict_minimize (L-BFGS-B, float64): loss {loss_ours:.12f}  "
              f"({out['nit']} iterations, {out['nfev']} evaluations, {seconds:.2f} s)")
        print(f"  scikit-learn (lbfgs):              loss {loss_theirs:.12f}")
        print(f"  relative difference: {out['relative_difference']:.2e}")
        print(f"  training accuracy: {out['accuracy_dict_minimize']:.4f} vs {out['accuracy_sklearn']:.4f}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=float, default=1.0)
    main(C=parser.parse_args().C)
