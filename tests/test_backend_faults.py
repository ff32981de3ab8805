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


# ---- constraints returned as sequences, or not computed from x --------------


@pytest.mark.parametrize("form", ["list of scalars", "tuple of vectors"])
@pytest.mark.parametrize("method", ["SLSQP", "trust-constr"])
def test_constraint_returned_as_a_sequence(be, form, method):
    """min |w - 1|^2 subject to w0 + w1 = 0.5 and w2 = 0.25 (as two outputs)."""

    def cons(x):
        w = x["w"]
        if form == "list of scalars":
            return [w[0] + w[1] - 0.5, w[2] - 0.25]
        return (be.ops.reshape(w[0:1] + w[1:2] - 0.5, (1,)), be.ops.reshape(w[2:3] - 0.25, (1,)))

    res = be.minimize(shifted_square(be), {"w": be.asarray(np.zeros(3))}, method=method,
                      constraints=[{"type": "eq", "fun": cons}], options={"maxiter": 200})
    assert res.success, res.message
    np.testing.assert_allclose(be.to_numpy(res.x["w"]), [0.25, 0.25, 0.25], atol=1e-5)


def test_torch_constraint_not_computed_from_x_names_the_constraint():
    torch = pytest.importorskip("torch")
    from dict_minimize.torch_api import minimize

    def fun(x):
        return ((x["w"] - 1.0) ** 2).sum()

    cons = [{"type": "ineq", "fun": lambda x: x["w"][0]},
            {"type": "eq", "fun": lambda x: x["w"].sum().item() - 1.0}]  # a float: no gradient
    with pytest.raises(ValueError, match=r"constraints\[1\].*does not depend on x"):
        minimize(fun, {"w": torch.zeros(3, dtype=torch.float64)}, method="SLSQP", constraints=cons)


# ---- the user's own exceptions keep their class and message -----------------


class PickyError(Exception):
    """A user exception whose constructor takes other arguments than one message."""

    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code


class PlainError(Exception):
    pass


def _backend_and_point(ad):
    import importlib

    from dict_minimize.core.driver import build_layout

    backend = importlib.import_module(f"dict_minimize.{ad.name}_api")._BACKEND
    layout, leaves = build_layout(backend, {"w": ad.asarray(np.zeros(3))})
    return backend, layout, backend.to_flat(leaves, layout)


@pytest.mark.parametrize("error", [PickyError(7, "bad input"), PlainError("plain")])
@pytest.mark.parametrize("hook", ["value", "value_and_grad", "linearize_grad", "value_and_jac"])
def test_user_exceptions_from_every_hook_keep_class_and_message(ad, hook, error):
    backend, layout, x = _backend_and_point(ad)

    def fun(tree, *args):
        raise error

    made = getattr(backend, hook)(fun, layout)
    if made is None:  # no such hook here (PyTorch's value is the driver's eager call)
        pytest.skip(f"{ad.name} has no {hook} hook")
    with pytest.raises(type(error)) as caught:
        out = made(x, ())
        if hook == "linearize_grad":
            out(np.ones_like(x))  # TensorFlow traces at the first product
    assert type(caught.value) is type(error)
    assert str(caught.value) == str(error)
    if isinstance(error, PickyError):
        assert caught.value.code == 7


@pytest.mark.parametrize("where", ["fun", "constraint"])
def test_user_exceptions_reach_the_caller_of_minimize(ad, where):
    def fun(x):
        if where == "fun":
            raise PickyError(3, "from fun")
        return ad.ops.sum(x["w"] ** 2)

    def con(x):
        if where == "constraint":
            raise PickyError(3, "from the constraint")
        return x["w"]

    with pytest.raises(PickyError, match=f"^code 3: from (the )?{where}"):
        ad.minimize(fun, {"w": ad.asarray(np.zeros(3))}, method="SLSQP",
                    constraints=[{"type": "ineq", "fun": con}])


# ---- errors that say what to fix --------------------------------------------


def test_bounds_naming_an_unknown_key_list_the_keys_x0_has(be):
    x0 = {"0.weight": be.asarray(np.zeros(2)), "0.bias": be.asarray(np.zeros(1))}
    with pytest.raises(ValueError, match=r"x0\['weight'\].*x0 has keys '0\.weight', '0\.bias'"):
        be.minimize(lambda x: be.ops.sum(x["0.weight"] ** 2), x0, bounds={"weight": (0.0, 1.0)})


def test_per_element_pairs_for_one_key_get_a_hint(be):
    x0 = {"w": be.asarray(np.full(2, 0.5))}
    for pairs in ([(0, 1), (0, 2)], [(0, 1), (0, 2), (0, 3)]):
        with pytest.raises(ValueError, match=r"x0\['w'\].*\(lb_array, ub_array\)"):
            be.minimize(lambda x: be.ops.sum(x["w"] ** 2), x0, method="L-BFGS-B", bounds={"w": pairs})
    # For a flat x0 a wrong count of pairs is SciPy's own error, as from SciPy.
    with pytest.raises(ValueError, match="The number of bounds is not compatible with the length of `x0`"):
        be.minimize(lambda x: be.ops.sum(x ** 2), be.asarray(np.zeros(3)), method="L-BFGS-B",
                    bounds=[(0, 1), (0, 2)])
    # The pair of arrays it suggests is read per element.
    res = be.minimize(lambda x: be.ops.sum((x["w"] - 3.0) ** 2), x0, method="L-BFGS-B",
                      bounds={"w": (np.array([0.0, 0.0]), np.array([1.0, 2.0]))})
    np.testing.assert_allclose(be.to_numpy(res.x["w"]), [1.0, 2.0])


def test_a_constraint_jac_pytree_missing_a_leaf_names_it(be):
    x0 = {"a": be.asarray(np.zeros(2)), "b": be.asarray(np.zeros(1))}

    def jac(x):
        return {"a": np.ones((1, 2))}  # no "b"

    def cfun(x):
        return be.ops.reshape(be.ops.sum(x["a"]) + be.ops.sum(x["b"]) - 1.0, (1,))

    cons = {"type": "eq", "fun": cfun, "jac": jac}
    with pytest.raises(ValueError, match=r"constraint jac.*x0\['b'\]"):
        be.minimize(lambda x: be.ops.sum(x["a"] ** 2) + be.ops.sum(x["b"] ** 2), x0, method="SLSQP",
                    constraints=cons)


@pytest.mark.parametrize("progress", ["yes", 0.5, [True]])
def test_progress_of_the_wrong_type_is_a_type_error(be, progress):
    with pytest.raises(TypeError, match="progress"):
        be.minimize(shifted_square(be), {"w": be.asarray(np.zeros(3))}, progress=progress)
