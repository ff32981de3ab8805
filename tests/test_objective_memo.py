"""The memo's point comparison and its read-only copies (dict_minimize.core.objective)."""

from __future__ import annotations

import numpy as np
import pytest

from dict_minimize.core.objective import Objective, frozen_copy, same_point


@pytest.mark.parametrize("n", [1, 5, 4096, 4097, 20_000])  # both sides of the bytes-compare limit
def test_same_point_against_a_frozen_copy(n):
    x = np.random.default_rng(n).normal(size=n)
    memo = frozen_copy(x)
    assert not memo.flags.writeable
    assert same_point(memo, x.copy())
    for i in {0, n // 2, n - 1}:
        y = x.copy()
        y[i] = np.nextafter(y[i], np.inf)  # one ulp, anywhere
        assert not same_point(memo, y)
    assert not same_point(memo, np.append(x, 0.0))
    assert not same_point(None, x)
    x[0] += 1.0  # the copy does not follow its source
    assert not same_point(memo, x)


def test_frozen_copy_of_float32_and_2d():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    memo = frozen_copy(x)
    assert memo.dtype == np.float64 and memo.shape == (2, 3) and not memo.flags.writeable
    assert same_point(memo, x.astype(np.float64))


def test_history_gradient_after_a_rejected_step():
    """The gradient for the iterate is the one before the last evaluation when the iterate is that point."""
    grads = {}

    def value_and_grad(x, args):
        g = 2 * x
        grads[x.tobytes()] = g
        return float(x @ x), g

    obj = Objective(lambda x, a: value_and_grad(x, a)[0], value_and_grad)
    x_accepted = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x_rejected = np.array([1.0, 2.5, 3.0, 4.0, 5.0])  # equal in the probed first, middle and last elements
    obj.fun(x_accepted)
    obj.fun(x_rejected)
    np.testing.assert_array_equal(obj.grad_for_history(x_accepted), 2 * x_accepted)
    np.testing.assert_array_equal(obj.grad_for_history(x_rejected), 2 * x_rejected)
    obj.fun(np.zeros(5))
    np.testing.assert_array_equal(obj.grad_for_history(x_rejected), 2 * x_rejected)
