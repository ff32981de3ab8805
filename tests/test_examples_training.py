"""The training examples, at reduced size: they run, learn, and report what they claim.

MNIST-1D at a few hundred samples and about 20 iterations; the digits
example at full size (1797 samples: a few seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHANCE = 0.1  # ten balanced classes
#: Bound on the digits example's loss difference from scikit-learn (measured: 1.3e-10).
DIGITS_RELATIVE_DIFFERENCE = 2e-10


@pytest.fixture(scope="module", autouse=True)
def examples_on_path():
    # The examples import their shared data module as `_data`, as when run as scripts.
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def test_mnist1d_data_is_the_default_split_generated_locally():
    pytest.importorskip("mnist1d")
    from _data import load_mnist1d

    full = load_mnist1d()
    assert full.x_train.shape == (4000, 40) and full.x_test.shape == (1000, 40)
    assert set(full.y_train.tolist()) == set(range(10))
    # make_dataset standardizes the signals as a whole.
    assert abs(full.x_train.mean()) < 0.05 and 0.9 < full.x_train.std() < 1.1
    small = load_mnist1d(n_train=100, n_test=10, dtype="float64")
    assert small.x_train.dtype.name == "float64"
    assert (small.x_train.astype("float32") == full.x_train[:100]).all()
    with pytest.raises(ValueError, match="n_train"):
        load_mnist1d(n_train=5000)
    with pytest.raises(TypeError, match="dtype"):
        load_mnist1d(dtype="int32")


@pytest.mark.slow
def test_mnist1d_torch_every_model_and_method_learns():
    pytest.importorskip("torch")
    pytest.importorskip("mnist1d")
    import mnist1d_torch

    rows = mnist1d_torch.main(n_train=400, n_test=400, maxiter=20, stochastic_start=50,
                              stochastic_batch=100, verbose=False)
    methods = ("lbfgs", "stochastic", "stochastic-fixed", "adam")
    assert [(r["model"], r["method"]) for r in rows] == [(m, k) for m in ("mlp", "cnn") for k in methods]
    for r in rows:
        assert r["test_accuracy"] > 2 * CHANCE, r
        assert r["framework"] == "torch" and r["wall_time_s"] > 0
    by = {(r["model"], r["method"]): r for r in rows}
    for model in ("mlp", "cnn"):
        lbfgs, growing, fixed, adam = (by[model, k] for k in methods)
        assert lbfgs["nit"] == growing["nit"] == fixed["nit"] == 20
        assert lbfgs["grad_evals"] >= 20
        assert adam["grad_evals"] == lbfgs["grad_evals"]  # Adam's budget is L-BFGS-B's nfev
        assert lbfgs["passes"] == lbfgs["grad_evals"]  # full batch: one pass per evaluation
        assert fixed["passes"] == pytest.approx(fixed["grad_evals"] * 100 / 400)
        # Growing batches: 50 samples at first, the whole 400 from iteration 0.4 * 20 = 8 on.
        assert growing["first_full_batch"] == 9
        assert growing["grad_evals"] * 50 / 400 < growing["passes"] < growing["grad_evals"]


def test_mnist1d_torch_rejects_unknown_names():
    pytest.importorskip("torch")
    import mnist1d_torch

    with pytest.raises(ValueError, match="models"):
        mnist1d_torch.main(models=["resnet"], verbose=False)
    with pytest.raises(ValueError, match="methods"):
        mnist1d_torch.main(methods=["sgd"], verbose=False)


def test_digits_logistic_matches_scikit_learn():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import digits_logistic

    out = digits_logistic.main(verbose=False)
    # The README quotes the measured 1.3e-10 (benchmarks/results/training.json): hold it to that.
    assert out["relative_difference"] < DIGITS_RELATIVE_DIFFERENCE
    assert out["accuracy_dict_minimize"] > 0.95  # training accuracy of a well-fit linear model


def test_digits_objective_is_scikit_learns_up_to_scale():
    """The mean form times C * n is scikit-learn's documented C * sum(log_loss) + ||W||^2 / 2."""
    torch = pytest.importorskip("torch")
    import digits_logistic

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    params = {"weight": torch.randn(3, 5, generator=gen, dtype=torch.float64),
              "bias": torch.randn(3, generator=gen, dtype=torch.float64)}
    C = 0.7
    log_loss = -torch.log_softmax(x @ params["weight"].T + params["bias"], dim=1)[torch.arange(30), y]
    documented = C * log_loss.sum() + 0.5 * (params["weight"] ** 2).sum()
    ours = digits_logistic.objective(params, x, y, C)
    assert float(ours * C * 30) == pytest.approx(float(documented), rel=1e-12)
