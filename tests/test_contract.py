"""The shared contract (DESIGN.md), run once per installed backend.

Every objective here is written with ``h.ops``/``h.asarray`` so that the same
test runs unchanged on NumPy, PyTorch, TensorFlow and JAX.
"""

from __future__ import annotations

import time
from collections import OrderedDict, namedtuple

import numpy as np
import optree
import pytest

from conftest import PointLog

Pair = namedtuple("Pair", ["first", "second"])
TARGET = 1.5
LOW_PRECISION_ATOL = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-6}


# ---- helpers -----------------------------------------------------------------


def leaves_of(tree):
    """The leaves of a pytree (any order; only sums use it)."""
    return optree.tree_leaves(tree, none_is_leaf=False)


def quadratic(h, target=TARGET):
    """sum over leaves of sum((leaf - target)**2); minimum: every element == target."""

    def fun(x):
        total = 0.0
        for leaf in leaves_of(x):
            total = total + h.ops.sum((leaf - target) ** 2)
        return total

    return fun


def rosen_tree(h):
    """Rosenbrock over the chain x['a'] followed by x['b']; minimum: all ones."""

    def chain(z):
        return h.ops.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)

    def fun(x):
        a, b = x["a"], x["b"]
        link = 100.0 * (b[0] - a[-1] ** 2) ** 2 + (1.0 - a[-1]) ** 2
        return chain(a) + chain(b) + link

    return fun


def rosen_x0(h, n_a=3, n_b=4, dtype="float64"):
    start = np.linspace(0.2, 0.8, n_a + n_b)
    return {"a": h.asarray(start[:n_a], dtype), "b": h.asarray(start[n_a:], dtype)}


def snapshot(h, tree):
    """A NumPy copy of every leaf, keyed by position, to check x0 is untouched."""
    return [np.array(h.to_numpy(leaf), copy=True) for leaf in leaves_of(tree)]


def assert_like(h, got, ref, path="x"):
    """``got`` has ``ref``'s structure, key order, native leaf type, shapes and dtypes."""
    assert type(got) is type(ref), f"{path}: {type(got).__name__} != {type(ref).__name__}"
    if isinstance(ref, dict):
        assert list(got.keys()) == list(ref.keys()), f"{path}: key order {list(got)} != {list(ref)}"
        for key in ref:
            assert_like(h, got[key], ref[key], f"{path}[{key!r}]")
    elif isinstance(ref, (list, tuple)):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_like(h, g, r, f"{path}[{i}]")
    else:
        assert h.is_native(got), f"{path}: {type(got).__name__} is not a {h.name} tensor"
        assert tuple(got.shape) == tuple(ref.shape), f"{path}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
        assert h.dtype_name(got) == h.dtype_name(ref), f"{path}: dtype"


def all_close(h, tree, value, atol):
    for leaf in leaves_of(tree):
        np.testing.assert_allclose(h.to_numpy(leaf).astype(np.float64), value, atol=atol)


def is_float64(h, tree):
    """Whether every leaf really is float64 (JAX without x64 makes float32 of it)."""
    return all(h.dtype_name(leaf) == "float64" for leaf in leaves_of(tree))


def quadratic_jac(h, target=TARGET):
    """The gradient of :func:`quadratic`, as a pytree."""
    return lambda x: optree.tree_map(lambda leaf: 2.0 * (leaf - target), x, none_is_leaf=False)


# ---- x0 forms ----------------------------------------------------------------


def x0_forms(h):
    a = lambda v: h.asarray(v)  # noqa: E731
    return {
        "tensor-1d": a([0.0, 1.0, 2.0]),
        "tensor-nd": a(np.arange(6.0).reshape(2, 3)),
        "dict": {"w": a([[0.0, 1.0], [2.0, 3.0]]), "b": a(0.5)},
        "ordereddict": OrderedDict([("z", a([1.0, 2.0])), ("y", a(3.0))]),
        "nested-dict": {"outer": {"inner": a([0.0, 0.5]), "s": a(2.0)}, "top": a(np.ones((1, 2)))},
        "list": [a([1.0, 2.0]), a(np.zeros((2, 2)))],
        "tuple": (a(0.0), a([4.0, 5.0, 6.0])),
        "namedtuple": Pair(first=a([0.0, 1.0]), second={"deep": [a(2.0), a([3.0])]}),
    }


FORMS = ["tensor-1d", "tensor-nd", "dict", "ordereddict", "nested-dict", "list", "tuple", "namedtuple"]


@pytest.mark.parametrize("form", FORMS)
def test_x0_forms_round_trip_structure_and_converge(backend, form):
    h = backend
    x0 = x0_forms(h)[form]
    before = snapshot(h, x0)
    res = h.minimize(quadratic(h), x0, method="L-BFGS-B")
    assert res.success, res.message
    assert_like(h, res.x, x0)
    assert_like(h, res.jac, x0)
    all_close(h, res.x, TARGET, atol=1e-5)
    assert type(res.fun) is float
    assert res.fun == pytest.approx(0.0, abs=1e-9)
    for b, a in zip(before, snapshot(h, x0)):
        np.testing.assert_array_equal(a, b)  # x0 is never modified


def test_single_0d_tensor(backend):
    h = backend
    x0 = h.asarray(0.0)
    res = h.minimize(quadratic(h), x0, method="BFGS")
    # numpy_api is a drop-in: SciPy turns a 0-d x0 into shape (1,).
    expected_shape = (1,) if h.name == "numpy" else ()
    assert h.is_native(res.x)
    assert tuple(res.x.shape) == expected_shape
    np.testing.assert_allclose(h.to_numpy(res.x), TARGET, atol=1e-5)


def test_unsorted_keys_keep_insertion_order_and_meaning(backend):
    """Keys 'b' before 'a': the result keeps that order and each key its own optimum."""
    h = backend
    targets = {"b": 2.0, "a": -1.0, "c": 0.25}

    def fun(x):
        return sum(h.ops.sum((x[k] - t) ** 2) for k, t in targets.items())

    x0 = {"b": h.asarray(np.zeros(3)), "a": h.asarray(np.zeros((2, 2))), "c": h.asarray(0.0)}
    res = h.minimize(fun, x0, method="L-BFGS-B")
    assert list(res.x) == ["b", "a", "c"]
    assert list(res.jac) == ["b", "a", "c"]
    for k, t in targets.items():
        np.testing.assert_allclose(h.to_numpy(res.x[k]), np.full(tuple(x0[k].shape), t), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes_preserved(backend, dtype):
    h = backend
    if dtype not in h.dtypes:
        pytest.skip(f"{h.name} has no {dtype}")
    x0 = {"lo": h.asarray(np.zeros(3), dtype), "mat": h.asarray(np.zeros((2, 2)), dtype)}
    # A user gradient: finite differences are tested apart (their step is below float16's eps).
    res = h.minimize(quadratic(h, 0.5), x0, jac=quadratic_jac(h, 0.5), method="L-BFGS-B")
    assert_like(h, res.x, x0)
    assert_like(h, res.jac, x0)
    all_close(h, res.x, 0.5, atol=LOW_PRECISION_ATOL[dtype])
    assert type(res.fun) is float


def test_mixed_dtypes_in_one_tree(backend):
    h = backend
    x0 = {"single": h.asarray([0.0, 0.0], "float32"), "double": h.asarray([0.0, 0.0, 0.0], "float64")}

    def fun(x):
        single = h.ops.sum((x["single"] - TARGET) ** 2)
        if h.name == "tensorflow":  # TensorFlow does not promote float32 + float64
            import tensorflow as tf

            single = tf.cast(single, x["double"].dtype)
        return single + h.ops.sum((x["double"] - TARGET) ** 2)

    res = h.minimize(fun, x0, jac=quadratic_jac(h), method="L-BFGS-B")
    assert_like(h, res.x, x0)
    all_close(h, res.x, TARGET, atol=1e-4)


@pytest.mark.parametrize("jac", [None, "2-point", "3-point"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_finite_differences_move_low_precision_leaves(backend, jac, dtype):
    """The finite-difference step must survive rounding to the leaf's dtype (x0 == 0 included)."""
    h = backend
    if jac is None and h.autodiff:
        pytest.skip("jac=None is autodiff here")
    if dtype not in h.dtypes:
        pytest.skip(f"{h.name} has no {dtype}")
    x0 = {"a": h.asarray([0.0, 0.0], dtype)}
    res = h.minimize(quadratic(h), x0, jac=jac, method="L-BFGS-B")
    assert_like(h, res.x, x0)
    all_close(h, res.x, TARGET, atol=LOW_PRECISION_ATOL[dtype] * 10)


def test_numpy_arrays_and_python_floats_accepted_as_leaves(backend):
    h = backend

    def fun(x):
        own = h.ops.sum((x["own"] - TARGET) ** 2)
        return h.ops.sum((x["np"] - TARGET) ** 2) + (x["py"] - TARGET) ** 2 + own

    x0 = {"np": np.array([0.0, 0.0]), "py": 0.0, "own": h.asarray([0.0])}
    res = h.minimize(fun, x0, method="L-BFGS-B")
    assert list(res.x) == ["np", "py", "own"]
    for key, shape in (("np", (2,)), ("py", ()), ("own", (1,))):
        assert tuple(np.shape(res.x[key])) == shape, key
        np.testing.assert_allclose(np.asarray(h.to_numpy(res.x[key]), dtype=np.float64), TARGET, atol=1e-4)
    assert x0["py"] == 0.0 and (x0["np"] == 0.0).all()


def test_trust_constr_gradient_is_in_grad(backend):
    """trust-constr keeps SciPy's meanings: ``grad`` is the pytree, ``jac`` the constraint Jacobians."""
    h = backend
    x0 = {"w": h.asarray([0.0, 3.0]), "s": h.asarray(2.0)}
    res = h.minimize(quadratic(h, 1.0), x0, jac=quadratic_jac(h, 1.0), method="trust-constr",
                     options={"maxiter": 2})
    assert_like(h, res.grad, x0)
    for key in x0:
        np.testing.assert_allclose(h.to_numpy(res.grad[key]), 2.0 * (h.to_numpy(res.x[key]) - 1.0), atol=1e-6)
    assert isinstance(res.jac, list)


def test_jac_is_gradient_at_result(backend):
    """res.jac is the objective gradient at res.x, as a pytree."""
    h = backend
    x0 = {"u": h.asarray([3.0, -1.0]), "v": h.asarray([[0.0, 2.0]])}

    def fun(x):  # gradient 2*(x - 1); stop early so it is not ~0
        return h.ops.sum((x["u"] - 1.0) ** 2) + h.ops.sum((x["v"] - 1.0) ** 2)

    res = h.minimize(fun, x0, method="L-BFGS-B", options={"maxiter": 1})
    for k in x0:
        expected = 2.0 * (h.to_numpy(res.x[k]) - 1.0)
        assert np.abs(expected).max() > 1e-3  # the check below is meaningful
        np.testing.assert_allclose(h.to_numpy(res.jac[k]), expected, atol=1e-5)


def test_result_never_aliases_x0(backend):
    """Mutating the result in place leaves x0 unchanged (mutable frameworks only)."""
    h = backend
    if h.name not in ("numpy", "torch"):
        pytest.skip(f"{h.name} tensors are immutable")
    x0 = {"p": h.asarray([0.0, 1.0]), "q": h.asarray(np.zeros((2, 2)))}
    before = snapshot(h, x0)
    res = h.minimize(quadratic(h), x0, method="L-BFGS-B", options={"maxiter": 2})
    for key in x0:
        leaf = res.x[key]
        if h.name == "torch":
            import torch

            with torch.no_grad():
                leaf.fill_(99.0)
        else:
            leaf[...] = 99.0
        assert (h.to_numpy(res.x[key]) == 99.0).all()
    for b, a in zip(before, snapshot(h, x0)):
        np.testing.assert_array_equal(a, b)


def test_single_tensor_result_never_aliases_x0(backend):
    h = backend
    if h.name not in ("numpy", "torch"):
        pytest.skip(f"{h.name} tensors are immutable")
    x0 = h.asarray([TARGET, TARGET])  # already optimal: x may come back unchanged
    res = h.minimize(quadratic(h), x0, method="L-BFGS-B")
    if h.name == "torch":
        import torch

        with torch.no_grad():
            res.x.fill_(-7.0)
    else:
        res.x[...] = -7.0
    np.testing.assert_array_equal(h.to_numpy(x0), [TARGET, TARGET])


# ---- jac forms -----------------------------------------------------------------


def test_jac_none_converges(backend):
    """jac=None: autodiff in autodiff backends, SciPy's finite differences in NumPy."""
    h = backend
    x0 = rosen_x0(h)
    res = h.minimize(rosen_tree(h), x0, method="L-BFGS-B", tol=1e-12)
    all_close(h, res.x, 1.0, atol=rosen_atol(h, x0))


def test_jac_true_value_and_gradient_pair(backend):
    h = backend
    seen_requires_grad = []

    def fun_and_grad(x):
        if h.name == "torch":
            seen_requires_grad.extend(leaf.requires_grad for leaf in leaves_of(x))
        value = h.ops.sum((x["a"] - 2.0) ** 2) + h.ops.sum((x["b"] + 1.0) ** 2)
        return value, {"a": 2.0 * (x["a"] - 2.0), "b": 2.0 * (x["b"] + 1.0)}

    x0 = {"a": h.asarray([0.0, 0.0]), "b": h.asarray(np.zeros((2, 2)))}
    res = h.minimize(fun_and_grad, x0, jac=True, method="L-BFGS-B")
    assert res.success, res.message
    all_close(h, res.x["a"], 2.0, atol=1e-6)
    all_close(h, res.x["b"], -1.0, atol=1e-6)
    assert_like(h, res.jac, x0)
    if h.name == "torch":
        assert seen_requires_grad and all(seen_requires_grad)


def test_jac_true_torch_autograd_inside(backend):
    """In torch, jac=True leaves have requires_grad=True: torch.autograd.grad works inside."""
    h = backend
    if h.name != "torch":
        pytest.skip("torch-specific")
    import torch

    def fun_and_grad(x):
        value = torch.sum((x["w"] - 3.0) ** 2)
        (g,) = torch.autograd.grad(value, [x["w"]])
        return value, {"w": g}

    res = h.minimize(fun_and_grad, {"w": torch.zeros(4, dtype=torch.float64)}, jac=True, method="BFGS")
    np.testing.assert_allclose(res.x["w"].numpy(), 3.0, atol=1e-6)


def test_jac_callable(backend):
    h = backend
    calls = []

    def fun(x):
        return h.ops.sum((x["a"] - 2.0) ** 2) + h.ops.sum((x["b"] + 1.0) ** 2)

    def jac(x, scale):
        calls.append(scale)
        return {"a": 2.0 * (x["a"] - 2.0) * scale, "b": 2.0 * (x["b"] + 1.0) * scale}

    x0 = {"a": h.asarray([5.0]), "b": h.asarray([[0.0, 4.0]])}
    res = h.minimize(lambda x, s: fun(x) * s, x0, args=(3.0,), jac=jac, method="BFGS")
    assert res.success, res.message
    assert calls and set(calls) == {3.0}  # args reach jac
    all_close(h, res.x["a"], 2.0, atol=1e-6)
    all_close(h, res.x["b"], -1.0, atol=1e-6)


@pytest.mark.parametrize("jac", ["2-point", "3-point"])
def test_jac_finite_difference_strings(backend, jac):
    h = backend
    x0 = {"a": h.asarray([0.0, 0.0]), "b": h.asarray(1.0)}
    res = h.minimize(quadratic(h, 0.75), x0, jac=jac, method="BFGS")
    assert res.success, res.message
    all_close(h, res.x, 0.75, atol=1e-5 if is_float64(h, x0) else 1e-3)
    assert_like(h, res.jac, x0)


@pytest.mark.parametrize("method", ["L-BFGS-B", "BFGS"])
def test_autodiff_memo_one_pass_per_point(ad_backend, method):
    """Value and gradient come from one pass: executions of fun == distinct points == nfev.

    The points are logged by a host callback inside fun, so a compiled
    objective (JAX, TensorFlow) is counted each time it runs, not once per trace.
    """
    h = ad_backend
    log = PointLog(h)
    inner = rosen_tree(h)

    def fun(x):
        log(x["a"], x["b"])
        return inner(x)

    res = h.minimize(fun, rosen_x0(h), method=method)
    assert res.success, res.message
    assert res.nfev > 5
    assert len(log.points) == res.nfev
    assert len(set(log.points)) == len(log.points)  # no point evaluated twice


def test_jac_true_memo_one_call_per_point(backend):
    """jac=True is called eagerly, once per distinct point (L-BFGS-B asks fun then jac)."""
    h = backend
    points = []

    def fun_and_grad(x):
        points.append(tuple(np.ravel(h.to_numpy(x["a"]))))
        return h.ops.sum((x["a"] - 1.0) ** 4), {"a": 4.0 * (x["a"] - 1.0) ** 3}

    res = h.minimize(fun_and_grad, {"a": h.asarray([3.0, -2.0])}, jac=True, method="L-BFGS-B")
    assert res.nfev > 2
    assert len(points) == res.nfev
    assert len(set(points)) == len(points)


# ---- convergence of the dict-split Rosenbrock --------------------------------

def rosen_atol(h, x0):
    """How close to all-ones the Rosenbrock minimizers get (finite differences: NumPy)."""
    if not is_float64(h, x0):
        return 1e-2
    return 1e-4 if h.autodiff else 1e-3


CONVERGING_METHODS = ["L-BFGS-B", "BFGS", "CG", "SLSQP", "TNC", "trust-constr"]


@pytest.mark.parametrize("method", CONVERGING_METHODS)
def test_rosenbrock_dict_converges(backend, method):
    h = backend
    x0 = rosen_x0(h)
    options = {"maxfun": 5000} if method == "TNC" else {"maxiter": 5000}
    res = h.minimize(rosen_tree(h), x0, method=method, tol=1e-12, options=options)
    assert_like(h, res.x, x0)
    all_close(h, res.x, 1.0, atol=rosen_atol(h, x0))
    assert res.fun < (1e-6 if is_float64(h, x0) else 1e-3)


@pytest.mark.parametrize("method", ["Nelder-Mead", "Powell"])
def test_rosenbrock_dict_converges_derivative_free(backend, method):
    h = backend
    x0 = rosen_x0(h, n_a=1, n_b=1)
    res = h.minimize(rosen_tree(h), x0, method=method)
    assert res.success, res.message
    assert_like(h, res.x, x0)
    all_close(h, res.x, 1.0, atol=1e-4 if is_float64(h, x0) else 1e-2)


# ---- extras: max_time and progress -------------------------------------------


def test_max_time_stops_with_best_point(backend):
    """A slow objective and a short max_time: a clean stop at the best point evaluated."""
    h = backend
    seen = []  # (value, x) of every evaluation

    def slow_rosen(x):
        time.sleep(0.01)  # 2-d Rosenbrock needs ~35 evaluations: >= 0.35 s
        a, b = x["a"], x["b"]
        value = 100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2
        grad = {"a": -400.0 * a * (b - a**2) - 2.0 * (1.0 - a), "b": 200.0 * (b - a**2)}
        seen.append((float(h.to_numpy(value)), float(h.to_numpy(a)), float(h.to_numpy(b))))
        return value, grad

    x0 = {"a": h.asarray(-1.2), "b": h.asarray(1.0)}
    res = h.minimize(slow_rosen, x0, jac=True, method="L-BFGS-B", max_time=0.05)
    assert res.success is False
    assert "time limit" in res.message
    assert seen
    best = min(seen)
    assert res.fun == best[0]
    assert (float(h.to_numpy(res.x["a"])), float(h.to_numpy(res.x["b"]))) == best[1:]
    assert_like(h, res.x, x0)


def test_progress_bar_on_stderr(backend, capsys):
    h = backend
    res = h.minimize(quadratic(h), {"a": h.asarray([0.0, 0.0])}, method="L-BFGS-B", progress=True)
    assert res.success, res.message
    err = capsys.readouterr().err
    assert f"{res.nit}it" in err
    assert f"f={res.fun:.6g}" in err
