"""Backend faults that used to give silent wrong answers or errors that hide their cause.

Each test runs on every backend it concerns: complex-step differences,
constraints returned as sequences or not computed from x, exceptions of the
user's own classes, and error messages that say what to fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint


def shifted_square(h):
    def fun(x):
        return h.ops.sum((x["w"] - 1.0) ** 2)

    return fun


# ---- jac='cs' ---------------------------------------------------------------


def test_complex_step_gradient_is_right_in_numpy():
    from dict_minimize.numpy_api import minimize

    res = minimize(lambda x: np.sum((x["w"] - 1.0) ** 2), {"w": np.zeros(3)}, method="BFGS", jac="cs")
    assert res.success and res.nit >= 1 and res.njev >= 2
    np.testing.assert_allclose(res.x["w"], 1.0, atol=1e-6)


@pytest.mark.parametrize("where", ["jac", "hess", "constraint jac"])
def test_complex_step_is_refused_by_autodiff_backends(ad, where):
    fun, x0 = shifted_square(ad), {"w": ad.asarray(np.zeros(3))}
    kwargs = {"method": "BFGS", "jac": "cs"}
    if where == "hess":
        kwargs = {"method": "trust-constr", "hess": "cs"}
    elif where == "constraint jac":
        con = NonlinearConstraint(lambda x: ad.ops.sum(x["w"]), -np.inf, 2.0, jac="cs")
        kwargs = {"method": "trust-constr", "constraints": [con]}
    with pytest.raises(ValueError, match=rf"'cs'.*{ad.name}"):
        ad.minimize(fun, x0, options={"maxiter": 5}, **kwargs)
