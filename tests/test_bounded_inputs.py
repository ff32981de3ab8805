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
    pytest.importorskip("torch")  # the reference logits
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
    pytest.importorskip("torch")
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


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_visualization_stays_in_the_box_and_lbfgsb_is_not_beaten(framework):
    import visualize

    with x64(framework):
        result = visualize.run(framework, budget=30, n_units=3)
    methods = result["methods"]
    assert set(methods) == {"lbfgsb"} | {f"adam lr={lr}" for lr in visualize.ADAM_LRS} | {
        f"normalized lr={lr}" for lr in visualize.NORMALIZED_LRS}
    evals = methods["lbfgsb"]["evals"]
    for name, s in methods.items():
        assert s["violation"] == 0.0, name
        assert s["evals"] == evals, name  # equal gradient evaluations, counted
        assert 0.0 <= s["mean_at_bound"] <= 1.0
    lb = methods["lbfgsb"]["mean_objective"]
    best = max(methods[result["best_lr"][m]]["mean_objective"] for m in ("adam", "normalized"))
    # The table: L-BFGS-B's mean J is at least the best tuned baseline's, less 1 %.
    assert lb >= best - 0.01 * abs(best), methods


def test_texture_and_dream_stay_in_their_boxes():
    pytest.importorskip("torch")
    import texture

    result = texture.run(size=32, budget=60, dream_budget=10)
    methods = result["methods"]
    for name, s in methods.items():
        assert s["violation"] == 0.0, name
        assert s["evals"] == methods["lbfgsb"]["evals"] >= 60, name
    best_adam = methods[result["best_adam"]]["loss"]
    # The table (pixel-scaled loss): L-BFGS-B ends below the best Adam.
    assert methods["lbfgsb"]["loss"] < best_adam, methods
    dream = result["dream"]
    assert dream["violation"] == 0.0 and dream["mean_square_after"] > 1.5 * dream["mean_square_before"]


def test_pictures_are_written_and_not_blank(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    import adversarial
    import texture
    import visualize

    result = {
        "framework": "torch",
        "adversarial": adversarial.run("torch", n=8, rounds=2, maxiter=50, budget=5, epsilons=(0.1,),
                                       losses=("margin",), out=str(tmp_path)),
        "visualize": visualize.run("torch", budget=10, n_units=2, out=str(tmp_path)),
        "texture": [texture.run(size=16, budget=10, dream_budget=3, out=str(tmp_path))],
    }
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == sorted(["adversarial_szegedy_torch.png", "adversarial_linf_torch.png",
                            "visualize_torch.png", "visualize_curves_torch.png", "texture.png",
                            "texture_curves.png", "deep_dream.png"])
    for name in names:
        img = mpimg.imread(tmp_path / name)
        assert img.shape[0] > 100 and img.shape[1] > 100, name
        assert img[..., :3].std() > 0.05, name  # not one flat colour
        assert (tmp_path / name).stat().st_size < 300_000, name

    # The benchmark's table is built from these same summaries.
    script = EXAMPLES.parent / "benchmarks" / "bounded_inputs.py"
    spec = importlib.util.spec_from_file_location("bounded_inputs_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.rows_of(result)
    tasks = [r["task"] for r in rows]
    assert tasks[0].startswith("targeted minimal attack") and len(rows) == 1 + 2 + 3 + 2 + 1
    assert all(r["evals"] > 0 and r["wall_s"] >= 0 for r in rows)
    table = bench.markdown(rows).splitlines()
    assert len(table) == 2 + len(rows) and table[2].count("|") == 8
