"""The bounded-input examples at reduced size: boxes hold at every evaluation, targets are met.

The digits CNN's committed weights are attacked in every installed framework;
visualization and texture synthesis run on small images. Each comparison is
checked against the margins that the README's "Bounded inputs" table reports
for the full-size runs (``python benchmarks/bounded_inputs.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FRAMEWORKS = [f for f, mod in (("torch", "torch"), ("jax", "jax"), ("tensorflow", "tensorflow"))
              if importlib.util.find_spec(mod) is not None]


@pytest.fixture(scope="module", autouse=True)
def examples_on_path():
    # The examples import their helpers as top-level modules, as when run as scripts.
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def x64(framework: str):
    """JAX's float64 mode for the block only (never changed for the other tests)."""
    if framework == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_transferred_weights_give_the_same_test_accuracy(framework):
    import _digits_cnn as cnn

    weights = cnn.load_weights()
    data = cnn.load_split()
    assert data.x_test.shape == (360, 8, 8) and 0.0 <= data.x_test.min() and data.x_test.max() <= 1.0
    with x64(framework):
        logits = cnn.logits_numpy(framework, weights, data.x_test)
        reference = cnn.logits_numpy("torch", weights, data.x_test)
    np.testing.assert_allclose(logits, reference, atol=1e-6)
    assert (logits.argmax(1) == data.y_test).mean() == pytest.approx(0.9806, abs=1e-3)  # 353 / 360


def test_torch_training_through_minimize_learns():
    import _digits_cnn as cnn

    weights, info = cnn.train_torch(maxiter=25)
    assert info["nit"] == 25 and info["nfev"] >= 25
    assert info["test_accuracy"] > 0.85, info  # 30 iterations; the committed 300 give 0.981
    assert sorted(weights) == sorted(cnn.load_weights())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_attacks_stay_in_their_boxes_and_reach_their_targets(framework):
    import adversarial

    with x64(framework):
        result = adversarial.run(framework, n=24, rounds=3, maxiter=100, budget=15, epsilons=(0.2,))
    sz = result["szegedy"]
    assert sz["violation"] == 0.0 and sz["success_rate"] >= 0.99, sz
    assert sz["evals"] > 3 and sz["median_l2"] < 1.5
    for row in result["linf"]:
        lb, pgd = row["lbfgsb"], row["pgd"]
        assert lb["violation"] == 0.0 and pgd["violation"] == 0.0, row
        assert lb["evals"] == pgd["evals"] >= 15, row  # PGD gets L-BFGS-B's real count
        assert lb["median_linf"] <= 0.2 + 1e-12
        if row["loss"] == "margin":  # the table: at least as strong as PGD at eps 0.2
            assert lb["success_rate"] >= pgd["success_rate"], row
