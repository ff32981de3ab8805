"""No silent wrong answers (DESIGN.md): right, or a clear error; never a wrong result with success=True.

Each test runs on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest

TARGETS = (0.0, 1.0, 10.0)
_TARGET = None  # read by an objective below, as a user's module-level setting

def quadratic(h, target):
    return lambda x: h.ops.sum((x["w"] - target) ** 2) + (x["b"] - 2.0 * target) ** 2


def close(h, tree, w, b, atol=1e-5):
    np.testing.assert_allclose(h.to_numpy(tree["w"]).astype(np.float64), w, atol=atol)
    np.testing.assert_allclose(float(h.to_numpy(tree["b"])), b, atol=atol)


def test_complex_step_is_right_or_refused(be):
    h = be
    x0 = {"w": h.asarray([0.0, 0.0, 0.0]), "b": h.asarray(0.0)}
    try:
        res = h.minimize(quadratic(h, 1.0), x0, method="BFGS", jac="cs")
    except (TypeError, ValueError) as err:  # refusing it is fine, if the message says why
        assert "cs" in str(err) or "complex" in str(err), err
        return
    assert res.nit >= 1
    close(h, res.x, 1.0, 2.0)
    close(h, res.jac, 0.0, 0.0)


@pytest.mark.parametrize("reads", ["closure", "global"])
def test_a_value_fun_reads_may_change_between_calls(be, reads):
    """The issue's ``for LAM in [0, 1, 10]: minimize(...)``: each call sees the LAM of its time."""
    h = be
    global _TARGET
    box = {"target": None}

    def fun(x):
        target = box["target"] if reads == "closure" else _TARGET
        return quadratic(h, target)(x)

    for target in TARGETS:
        box["target"] = _TARGET = target
        x0 = {"w": h.asarray([3.0, -3.0]), "b": h.asarray(5.0)}
        res = h.minimize(fun, x0, method="L-BFGS-B")
        assert res.success, res.message
        close(h, res.x, target, 2.0 * target, atol=1e-4)


@pytest.mark.parametrize("user_compiled", [False, True], ids=["plain", "user-compiled"])
def test_same_fun_with_new_shapes_and_args_between_calls(be, user_compiled):
    """What is reused across calls is keyed on x0's layout and the static args: each call is answered.

    A function the user compiled (``jax.jit``, ``tf.function``) is the one
    whose compilations are shared across calls.
    """
    h = be

    def fun(x, target):
        return h.ops.sum((x["w"] - target) ** 2)

    if user_compiled:
        if h.name == "jax":
            import jax

            fun = jax.jit(fun)
        elif h.name == "tensorflow":
            import tensorflow as tf

            fun = tf.function(fun)
        else:
            pytest.skip(f"{h.name} has no compiled functions to share")

    for shape, target in (((2,), 1.0), ((3,), 2.0), ((2, 2), -1.0), ((3,), 0.5)):
        res = h.minimize(fun, {"w": h.asarray(np.zeros(shape))}, args=(target,), method="L-BFGS-B")
        assert res.success, res.message
        assert tuple(res.x["w"].shape) == shape
        np.testing.assert_allclose(h.to_numpy(res.x["w"]).astype(np.float64), target, atol=1e-5)
