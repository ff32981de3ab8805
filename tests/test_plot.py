"""dict_minimize.plot: history plots, loss landscapes over every backend, landscape plots."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import OptimizeResult

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from dict_minimize.numpy_api import minimize  # noqa: E402
from dict_minimize.plot import loss_landscape, plot_history, plot_landscape  # noqa: E402


def quadratic(x):
    return float(np.sum((x["w"] - 1.0) ** 2) + 10.0 * np.sum(x["b"] ** 2))


def runs():
    x0 = {"w": np.zeros(4), "b": np.full(2, 0.5)}
    return [minimize(quadratic, x0, method=m) for m in ("L-BFGS-B", "CG")]


# ---- plot_history ------------------------------------------------------------


@pytest.mark.parametrize("x, key", [("iteration", "nit"), ("nfev", "nfev"), ("time", "time")])
def test_history_lines_hold_the_history_arrays(x, key):
    results = runs()
    drawn = plot_history(results, x=x, labels=["L-BFGS-B", "CG"])
    assert [ax.get_ylabel() for ax in drawn.axes] == ["objective", "gradient norm"]
    for row, y in zip(drawn.lines, ("fun", "grad_norm")):
        assert len(row) == 2
        for line, res in zip(row, results):
            np.testing.assert_array_equal(line.get_xdata(), res.history[key])
            np.testing.assert_array_equal(line.get_ydata(), res.history[y])
    assert [t.get_text() for t in drawn.axes[0].get_legend().get_texts()] == ["L-BFGS-B", "CG"]
    assert drawn.axes[0].get_yscale() == "log"


def test_history_one_result_one_key_into_a_given_axes():
    from matplotlib.figure import Figure

    res = runs()[0]
    fig = Figure()
    ax = fig.add_subplot()
    drawn = plot_history(res, y="fun", ax=ax, logy=False)
    assert drawn.figure is fig and drawn.axes == (ax,)
    assert ax.get_yscale() == "linear" and ax.get_legend() is None
    np.testing.assert_array_equal(drawn.lines[0][0].get_ydata(), res.history["fun"])


def test_history_marks_epoch_boundaries_of_a_stochastic_run():
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(5, 3)) for _ in range(3)]

    def fun(x, batch):
        return float(np.sum((batch @ x["w"] - 1.0) ** 2))

    res = minimize(fun, {"w": np.zeros(3)}, method="L-BFGS-B", jac="2-point", batches=batches,
                   options={"maxiter": 12})
    epochs = res.history["epoch"]
    assert epochs[-1] > epochs[0]  # several epochs ran
    expected = res.history["nit"][1:][np.diff(epochs) > 0]
    drawn = plot_history(res, y="fun")
    got = [line.get_xdata()[0] for line in drawn.epoch_lines]
    np.testing.assert_array_equal(got, expected)
    assert all(line.get_color() == drawn.lines[0][0].get_color() for line in drawn.epoch_lines)
    # A full-batch run has one epoch: no boundary.
    assert plot_history(runs()[0]).epoch_lines == ()


def test_history_symlog_when_values_reach_zero_or_below():
    hist = {"nit": np.arange(1, 4), "fun": np.array([1.0, -2.0, -3.0]), "grad_norm": np.ones(3),
            "time": np.ones(3), "nfev": np.arange(3), "epoch": np.zeros(3, int)}
    drawn = plot_history(OptimizeResult(history=hist))
    assert drawn.axes[0].get_yscale() == "symlog" and drawn.axes[1].get_yscale() == "log"


def test_history_bad_arguments_name_them():
    res = runs()[0]
    with pytest.raises(ValueError, match="x must be one of"):
        plot_history(res, x="epochs")
    with pytest.raises(ValueError, match="no 'loss'"):
        plot_history(res, y="loss")
    with pytest.raises(ValueError, match="labels has 1 entries for 2"):
        plot_history(runs(), labels=["one"])
    with pytest.raises(TypeError, match=r"results\[0\] has no history"):
        plot_history([object()])
    flat = minimize(lambda x: float(np.sum((x - 1.0) ** 2)), np.zeros(3))  # SciPy's own case
    with pytest.raises(TypeError, match=r"results\[1\] has no history.*pass history=True"):
        plot_history([runs()[0], flat])


# ---- loss_landscape over every backend ----------------------------------------


def _problem(h):
    """A small network-like objective in the backend's own ops, and its x."""
    rng = np.random.default_rng(1)
    x = {"w": h.asarray(rng.normal(size=(3, 2))), "k": h.asarray(rng.normal(size=(2, 2, 2))),
         "b": h.asarray(rng.normal(size=3))}
    calls = []

    def fun(p, scale):
        calls.append(1)
        o = h.ops
        return scale * (o.sum(o.tanh(p["w"]) ** 2) + o.sum(o.sin(p["k"])) + o.sum(o.exp(p["b"] / 4.0)))

    return fun, x, calls


def _shifted(h, x, dirs, coefs):
    return {k: x[k] + sum(c * d[k] for c, d in zip(coefs, dirs)) for k in x}


def test_landscape_values_are_direct_evaluations(be):
    fun, x, calls = _problem(be)
    grid = loss_landscape(fun, x, args=(2.0,), points=5, span=0.7, biases="scale")
    assert grid.values.shape == (5, 5) and grid.betas is not None
    for d in grid.directions:  # pytrees like x, in the backend's own tensors
        assert set(d) == set(x)
        assert all(be.is_native(d[k]) and tuple(d[k].shape) == tuple(x[k].shape) for k in x)
    for i, j in [(0, 0), (1, 3), (4, 2), (4, 4)]:
        point = _shifted(be, x, grid.directions, (grid.alphas[i], grid.betas[j]))
        assert grid.values[i, j] == pytest.approx(float(be.to_numpy(fun(point, 2.0))), rel=1e-12)
    assert grid.center == pytest.approx(float(be.to_numpy(fun(x, 2.0))), rel=1e-12)
    assert grid.values[2, 2] == grid.center


@pytest.mark.parametrize("name", ["jax", "tensorflow"])
def test_landscape_compiles_once_in_jax_and_tensorflow(name):
    from conftest import BACKENDS, float64_scope, harness

    if name not in BACKENDS:
        pytest.skip(f"{name} is not installed")
    h = harness(name)
    with float64_scope(h):
        fun, x, calls = _problem(h)
        grid = loss_landscape(fun, x, args=(1.0,), points=6)
    assert grid.values.size == 36
    assert len(calls) <= 2, f"fun ran {len(calls)} times in Python for 37 evaluations: retraced per point"


def test_landscape_one_direction(be):
    fun, x, calls = _problem(be)
    grid = loss_landscape(fun, x, args=(1.0,), directions=1, points=7, normalization="global")
    assert grid.values.shape == (7,) and grid.betas is None and len(grid.directions) == 1
    point = _shifted(be, x, grid.directions, (grid.alphas[1],))
    assert grid.values[1] == pytest.approx(float(be.to_numpy(fun(point, 1.0))), rel=1e-12)


def _flat_norms(tree, key):
    a = np.asarray(tree[key], dtype=float)
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)


def test_filter_normalization_gives_each_filter_the_parameters_norm():
    rng = np.random.default_rng(3)
    x = {"conv": rng.normal(size=(4, 3, 2, 2)), "dense": rng.normal(size=(5, 6)) * 3.0,
         "bias": rng.normal(size=5), "scale": np.array(2.0)}
    x["dense"][2] = 0.0  # a zero filter gets a zero direction, not a division by zero
    grid = loss_landscape(quadratic_any, x, points=3)
    for d in grid.directions:
        for key in ("conv", "dense"):
            np.testing.assert_allclose(_flat_norms(d, key), _flat_norms(x, key), rtol=1e-12)
        assert not np.any(d["bias"]) and not np.any(d["scale"])  # 1-d and 0-d leaves: zero
    scaled = loss_landscape(quadratic_any, x, points=3, biases="scale")
    for d in scaled.directions:
        np.testing.assert_allclose(np.linalg.norm(d["bias"]), np.linalg.norm(x["bias"]), rtol=1e-12)
        # One vector scaled as a whole, not each entry to |b_i| as if it were a filter.
        assert not np.allclose(np.abs(d["bias"]), np.abs(x["bias"]))
        np.testing.assert_allclose(_flat_norms(d, "conv"), _flat_norms(x, "conv"), rtol=1e-12)


def test_filter_axis_picks_the_axis_that_indexes_filters():
    rng = np.random.default_rng(4)
    x = {"dense": rng.normal(size=(6, 3)), "kernel": rng.normal(size=(2, 2, 3, 4))}  # (in, out), HWIO
    (d,) = loss_landscape(quadratic_any, x, directions=1, points=3, filter_axis=-1).directions
    for key in x:
        last = [np.linalg.norm(a[..., j]) for a in (d[key], x[key]) for j in range(x[key].shape[-1])]
        half = len(last) // 2
        np.testing.assert_allclose(last[:half], last[half:], rtol=1e-12)
    with pytest.raises(TypeError, match="filter_axis must be an int"):
        loss_landscape(quadratic_any, x, filter_axis=None)


def quadratic_any(p):
    return float(sum(np.sum(np.asarray(v) ** 2) for v in p.values()))


def test_global_normalization_and_raw_gaussian_directions():
    x = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(2)}
    grid = loss_landscape(quadratic_any, x, points=3, normalization="global", seed=5)
    norm_x = np.sqrt(np.sum(x["w"] ** 2) + np.sum(x["b"] ** 2))
    for d in grid.directions:
        assert np.sqrt(np.sum(d["w"] ** 2) + np.sum(d["b"] ** 2)) == pytest.approx(norm_x, rel=1e-12)
    raw = loss_landscape(quadratic_any, x, points=3, normalization=None, seed=5)
    draws = np.random.default_rng(5).standard_normal((2, 8))  # Gaussian, not uniform on [0, 1]
    for d, expected in zip(raw.directions, draws):
        np.testing.assert_array_equal(np.concatenate([d["w"].ravel(), d["b"]]), expected)


def test_same_seed_same_grid_other_seed_other_grid():
    x = {"w": np.linspace(-1, 1, 12).reshape(3, 4)}
    a = loss_landscape(quadratic_any, x, points=4, seed=7)
    b = loss_landscape(quadratic_any, x, points=4, seed=7)
    c = loss_landscape(quadratic_any, x, points=4, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.directions[0]["w"], b.directions[0]["w"])
    assert not np.array_equal(a.values, c.values)


@pytest.mark.parametrize("points", [5, 6])
def test_grid_is_symmetric_and_odd_points_centre_on_x(points):
    x = {"w": np.ones((2, 2))}
    grid = loss_landscape(quadratic_any, x, points=points, span=0.3)
    np.testing.assert_allclose(grid.alphas, -grid.alphas[::-1], atol=1e-15)
    assert grid.alphas[0] == pytest.approx(-0.3) and grid.alphas[-1] == pytest.approx(0.3)
    if points % 2:
        mid = points // 2
        assert grid.alphas[mid] == 0.0 and grid.betas[mid] == 0.0
        assert grid.values[mid, mid] == quadratic_any(x)
    else:
        assert 0.0 not in grid.alphas


def test_given_directions_and_projection_of_a_path():
    x = {"w": np.ones((2, 3))}
    d1, d2 = {"w": np.eye(2, 3)}, {"w": np.ones((2, 3)) - np.eye(2, 3)}
    grid = loss_landscape(quadratic_any, x, directions=[d1, d2], normalization=None, points=3)
    np.testing.assert_array_equal(grid.directions[0]["w"], d1["w"])
    path = [{"w": x["w"] + a * d1["w"] + b * d2["w"]} for a, b in [(0.5, -0.2), (0.1, 0.3)]]
    np.testing.assert_allclose(grid.project(path), [[0.5, -0.2], [0.1, 0.3]], atol=1e-12)


def test_landscape_bad_arguments():
    x = {"w": np.ones((2, 2))}
    with pytest.raises(ValueError, match="normalization must be one of"):
        loss_landscape(quadratic_any, x, normalization="layer")
    with pytest.raises(ValueError, match="points must be an int >= 2"):
        loss_landscape(quadratic_any, x, points=1)
    with pytest.raises(ValueError, match="directions must be 1 or 2"):
        loss_landscape(quadratic_any, x, directions=3)
    with pytest.raises(ValueError, match="span must be a positive number"):
        loss_landscape(quadratic_any, x, span=0)
    with pytest.raises(ValueError, match="no leaf of 2 or more dimensions"):
        loss_landscape(quadratic_any, {"a": np.array(1.0), "b": np.ones(3)})
    with pytest.raises(ValueError, match=r"directions\[0\]\['w'\] has shape \(3,\)"):
        loss_landscape(quadratic_any, x, directions=[{"w": np.ones(3)}])


# ---- plot_landscape -----------------------------------------------------------


def test_plot_landscape_contour_and_path():
    x = {"w": np.ones((2, 3))}
    grid = loss_landscape(quadratic_any, x, points=5)
    d1, d2 = grid.directions[0]["w"], grid.directions[1]["w"]
    path = [{"w": x["w"] + a * d1 - a * d2} for a in (0.8, 0.4, 0.0)]
    drawn = plot_landscape(grid, path=path)
    np.testing.assert_allclose(drawn.path.get_xydata(), grid.project(path), atol=1e-12)
    np.testing.assert_allclose(drawn.path.get_xydata(), [[0.8, -0.8], [0.4, -0.4], [0.0, 0.0]], atol=1e-12)
    levels = drawn.surface.levels  # the filled contours cover the values
    assert levels[0] <= grid.values.min() and levels[-1] >= grid.values.max() and len(levels) > 10


def test_plot_landscape_log_contours():
    x = {"w": np.ones((2, 3))}
    grid = loss_landscape(quadratic_any, x, points=5)
    drawn = plot_landscape(grid, logz=True)  # positive values: log10 of them
    levels = drawn.surface.levels
    assert levels[0] <= np.log10(grid.values.min()) and levels[-1] >= np.log10(grid.values.max())
    shifted = loss_landscape(lambda p: quadratic_any(p) - 10.0, x, points=5)  # some values < 0
    levels = plot_landscape(shifted, logz=True).surface.levels
    span = shifted.values.max() - shifted.values.min()
    assert levels[0] <= np.log10(1e-3 * span) and levels[-1] >= np.log10(span * 1.001)


def test_docstring_examples_run():
    import doctest

    import dict_minimize.plot

    result = doctest.testmod(dict_minimize.plot)
    assert result.attempted > 10 and result.failed == 0


def test_plot_landscape_line_for_one_direction():
    x = {"w": np.ones((2, 3))}
    grid = loss_landscape(quadratic_any, x, directions=1, points=7)
    drawn = plot_landscape(grid, path=[x], logz=True)
    np.testing.assert_array_equal(drawn.surface.get_xdata(), grid.alphas)
    np.testing.assert_array_equal(drawn.surface.get_ydata(), grid.values)
    assert drawn.ax.get_yscale() == "log" and drawn.path.get_xdata()[0] == pytest.approx(0.0, abs=1e-12)
