"""What only the JAX backend has: compile-once, x64 mode, JAX pytree nodes, devices, curvature.

The shared contract suite (``test_contract*.py``) covers what every backend
does; here: ``fun`` is traced once per run (a Python counter inside ``fun``
counts traces, since a compiled function never runs Python again), float64
with JAX's 64-bit mode off and on, x0's insertion order, equinox / flax /
registered pytree nodes, Hessian-vector products and constraint Jacobians
against finite differences, devices, and the examples.

64-bit mode is only switched on inside ``jax.enable_x64`` blocks (restored on
exit) or in a subprocess, never globally for the test session.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from scipy.optimize import NonlinearConstraint

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from dict_minimize.core.driver import build_layout  # noqa: E402
from dict_minimize.jax_api import JaxBackend, minimize  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKEND = JaxBackend()


def enable_x64():
    """JAX's 64-bit mode for one ``with`` block, restored on exit."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # JAX < 0.7

    return enable_x64()


@pytest.fixture(autouse=True)
def _x64_is_off_around_every_test():
    assert not jax.config.jax_enable_x64, "64-bit mode leaked into this test"
    yield
    assert not jax.config.jax_enable_x64, "this test left 64-bit mode on"


class Counted:
    """``fun`` with a count of its Python calls: under ``jax.jit`` that is the number of traces."""

    def __init__(self, fun):
        self.fun = fun
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.fun(*args)


def chained_rosenbrock(x):
    z = jnp.concatenate([x["head"], x["tail"]])
    return jnp.sum(100.0 * (z[1:] - z[:-1] ** 2) ** 2 + (1.0 - z[:-1]) ** 2)


def rosenbrock_x0(n: int, dtype=np.float32) -> dict:
    start = np.where(np.arange(n) % 2 == 0, -1.2, 1.0).astype(dtype)
    return {"head": jnp.asarray(start[: n // 2]), "tail": jnp.asarray(start[n // 2 :])}


def flat_point(x0):
    layout, leaves = build_layout(BACKEND, BACKEND.prepare_x0(x0))
    return layout, BACKEND.to_flat(leaves, layout)


# ---- compiled once ----------------------------------------------------------


def test_value_and_grad_traced_once_over_a_long_lbfgsb_run():
    fun = Counted(chained_rosenbrock)
    res = minimize(fun, rosenbrock_x0(40), method="L-BFGS-B", options={"maxiter": 1000})
    assert res.nit >= 100 and res.nfev >= 100
    assert res.fun < 1e-6
    assert fun.calls == 1


@pytest.mark.parametrize("method", ["Newton-CG", "trust-krylov"])
def test_hessian_vector_products_traced_once(method):
    fun = Counted(chained_rosenbrock)
    res = minimize(fun, rosenbrock_x0(20), method=method, options={"maxiter": 1000})
    assert res.success and res.fun < 1e-4
    assert res.nhev >= 50 and res.nit >= 10  # many products, at many points
    assert fun.calls == 2  # value-and-grad once, the linearized gradient once


def test_array_args_are_traced_and_other_args_are_static():
    def fit(x, data, power, mode):
        # `power` drives a Python loop and `mode` a Python branch: both must be static.
        residual = x["w"] * data - 1.0
        total = sum(residual**2 for _ in range(power))
        return jnp.sum(total) if mode == "sum" else jnp.max(total)

    fun = Counted(fit)
    data = np.linspace(1.0, 2.0, 5, dtype=np.float32)
    res = minimize(fun, {"w": jnp.zeros(5)}, args=(data, 2, "sum"), method="L-BFGS-B")
    np.testing.assert_allclose(np.asarray(res.x["w"]), 1.0 / data, rtol=1e-4)
    assert fun.calls == 1


def test_minibatches_of_one_shape_reuse_the_compiled_function():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 1.0, size=8).astype(np.float32) for _ in range(4)]
    fun = Counted(lambda x, batch: jnp.mean((x["m"] - batch) ** 2))
    res = minimize(fun, {"m": jnp.zeros(())}, batches=batches, method="L-BFGS-B", options={"maxiter": 12})
    assert res.nit == 12
    assert fun.calls == 1
    assert abs(float(res.x["m"]) - 3.0) < 1.0


LAM = 0.0  # read by `regularized` at trace time: changed between calls below


def regularized(x):
    return jnp.sum((x["w"] - 1.0) ** 2) + LAM * jnp.sum(x["w"] ** 2)


def test_a_global_changed_between_calls_is_seen_by_the_next_call():
    global LAM
    try:
        for LAM in (0.0, 1.0, 10.0):
            res = minimize(regularized, {"w": jnp.zeros(3)}, method="L-BFGS-B")
            np.testing.assert_allclose(np.asarray(res.x["w"]), 1.0 / (1.0 + LAM), rtol=1e-4)
    finally:
        LAM = 0.0


@pytest.mark.parametrize("method", ["L-BFGS-B", "Newton-CG", "Nelder-Mead"])
def test_a_closure_changed_between_calls_is_seen_by_the_next_call(method):
    target = [1.0]

    def fun(x):
        return jnp.sum((x["w"] - target[0]) ** 2)

    cons = [{"type": "ineq", "fun": lambda x: target[0] + 1.0 - x["w"]}]
    for value in (1.0, 3.0):
        target[0] = value
        res = minimize(fun, {"w": jnp.zeros(2)}, method=method, options={"maxiter": 2000})
        np.testing.assert_allclose(np.asarray(res.x["w"]), value, atol=1e-3)
        constrained = minimize(fun, {"w": jnp.zeros(2)}, method="SLSQP", constraints=cons)
        np.testing.assert_allclose(np.asarray(constrained.x["w"]), value, atol=1e-4)


def test_a_plain_function_is_traced_once_per_call_and_never_cached():
    from dict_minimize import jax_api

    fun = Counted(chained_rosenbrock)
    functions_before = len(jax_api._CACHE)
    first = minimize(fun, rosenbrock_x0(20), method="L-BFGS-B")
    again = minimize(fun, rosenbrock_x0(20), method="L-BFGS-B")
    assert fun.calls == 2  # once per call: what fun reads may have changed in between
    assert len(jax_api._CACHE) == functions_before
    np.testing.assert_array_equal(np.asarray(first.x["tail"]), np.asarray(again.x["tail"]))
    assert first.nfev == again.nfev


def test_a_function_the_user_jitted_shares_compiled_code_across_calls():
    from dict_minimize import jax_api

    jitted = jax.jit(chained_rosenbrock)
    functions_before = len(jax_api._CACHE)
    first = minimize(jitted, rosenbrock_x0(20), method="L-BFGS-B")
    again = minimize(jitted, rosenbrock_x0(20), method="L-BFGS-B")
    assert len(jax_api._CACHE) == functions_before + 1
    layout, _ = flat_point(rosenbrock_x0(20))
    static = jax_api._partition_args(())[1]
    compiled = jax_api._CACHE.get(jitted, ("value_and_grad", layout, static), make=None)  # already built
    assert compiled._cache_size() == 1  # one trace for both calls
    np.testing.assert_array_equal(np.asarray(first.x["tail"]), np.asarray(again.x["tail"]))
    minimize(jitted, rosenbrock_x0(22), method="L-BFGS-B")  # other shapes: another entry
    other = flat_point(rosenbrock_x0(22))[0]
    assert jax_api._CACHE.get(jitted, ("value_and_grad", other, static), make=None)._cache_size() == 1


def test_static_args_compile_once_per_distinct_value_within_a_call():
    fun = Counted(lambda x, target: jnp.sum((x["w"] - target) ** 2))
    res = minimize(fun, {"w": jnp.zeros(3)}, batches=[1.0, 2.0, 1.0, 2.0], method="L-BFGS-B",
                   options={"maxiter": 8})
    assert res.nit == 8
    assert fun.calls == 2  # 1.0, 2.0; then both again from this call's compiled code


def test_a_bound_methods_attributes_changed_between_calls_are_seen():
    class Model:
        def __init__(self):
            self.calls, self.centre = 0, 3.0

        def loss(self, x):
            self.calls += 1
            return jnp.sum((x["w"] - self.centre) ** 2)

    model = Model()
    for centre in (3.0, -1.0):
        model.centre = centre
        res = minimize(model.loss, {"w": jnp.zeros(2)}, method="L-BFGS-B")
        np.testing.assert_allclose(np.asarray(res.x["w"]), centre, atol=1e-5)
    assert model.calls == 2


def test_the_cache_does_not_keep_a_jitted_fun_alive():
    import gc
    import weakref

    from dict_minimize import jax_api

    big = jnp.ones(3)
    fun = jax.jit(lambda x: jnp.sum((x["w"] - big) ** 2))

    gc.collect()  # earlier tests' functions that only a collection frees
    functions_before = len(jax_api._CACHE)
    for method in ("L-BFGS-B", "Newton-CG", "Nelder-Mead"):
        minimize(fun, {"w": jnp.zeros(3)}, method=method)
    assert len(jax_api._CACHE) == functions_before + 1
    ref = weakref.ref(fun)
    del fun
    gc.collect()
    assert ref() is None
    assert len(jax_api._CACHE) == functions_before


def test_gradient_is_taken_with_respect_to_the_leaves():
    """No pad of the full buffer per leaf in the compiled gradient (what the flat buffer's slices cost)."""
    from dict_minimize import jax_api

    def fun(x):
        return sum(jnp.sum(leaf**2) for leaf in x.values())

    x0 = {f"k{i}": jnp.ones(5) for i in range(4)}
    fun = jax.jit(fun)  # cached across calls: the compiled function can be looked up
    layout, x = flat_point(x0)
    value, grad = BACKEND.value_and_grad(fun, layout)(x, ())
    assert value == pytest.approx(20.0)
    np.testing.assert_allclose(grad, 2.0)
    static = jax_api._partition_args(())[1]
    compiled = jax_api._CACHE.get(fun, ("value_and_grad", layout, static), make=None)  # already built
    hlo = compiled.lower(BACKEND._params(x, layout), []).as_text()
    assert "concatenate" in hlo and "pad" not in hlo


def test_gradient_free_methods_use_compiled_value():
    fun = Counted(chained_rosenbrock)
    res = minimize(fun, rosenbrock_x0(4), method="Nelder-Mead", options={"maxiter": 200})
    assert res.nfev > 50
    assert fun.calls == 1


def test_gradient_free_methods_fall_back_to_eager_for_untraceable_fun():
    traced = []

    def fun(x):
        traced.append(isinstance(x["w"], jax.core.Tracer))
        w = np.asarray(x["w"])  # a tracer error under jax.jit
        return float(np.sum((w - 2.0) ** 2))

    with pytest.warns(UserWarning, match=r"could not be traced.*TracerArrayConversionError.*eagerly") as seen:
        res = minimize(fun, {"w": jnp.zeros(2)}, method="Powell")
    np.testing.assert_allclose(np.asarray(res.x["w"]), 2.0, atol=1e-4)
    assert traced[0] and not any(traced[1:])  # one failed trace, then every evaluation eagerly
    assert len(traced) > 10
    assert sum("could not be traced" in str(w.message) for w in seen) == 1  # said once


def test_other_errors_while_tracing_do_not_fall_back():
    class Mistake(TypeError):
        pass

    def fun(x):
        raise Mistake("the user's own TypeError")

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning: the error itself comes out
        with pytest.raises(Mistake, match="the user's own TypeError"):
            minimize(fun, {"w": jnp.zeros(2)}, method="Nelder-Mead")
    with pytest.raises(TypeError):
        minimize(lambda x: jnp.sum(x["w"]) + "a", {"w": jnp.zeros(2)}, method="Nelder-Mead")


def test_fun_must_return_a_scalar():
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x["a"] ** 2, {"a": jnp.ones(3)}, method="L-BFGS-B")


# ---- float64 and JAX's 64-bit mode ------------------------------------------


def quadratic(x):
    return sum(jnp.sum((leaf - 1.0 / 3.0) ** 2) for leaf in x.values())


def test_float64_leaves_with_x64_off_warn_and_run_in_float32():
    x0 = {"a": jnp.zeros(2), "b": np.zeros(3), "c": 0.5}
    with pytest.warns(UserWarning, match=r"x0\['b'\] \(and 1 more\) is float64.*jax_enable_x64"):
        res = minimize(quadratic, x0, method="L-BFGS-B")
    for key in x0:
        assert isinstance(res.x[key], jax.Array) and res.x[key].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(res.x[key]), 1.0 / 3.0, rtol=1e-5)
    assert isinstance(x0["b"], np.ndarray) and not x0["b"].any()  # x0 untouched


def test_float32_x0_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = minimize(quadratic, {"a": jnp.zeros(2), "b": np.zeros(3, np.float32)}, method="L-BFGS-B")
    assert res.x["b"].dtype == jnp.float32


def test_float64_with_x64_on_keeps_float64_precision():
    with enable_x64():
        x0 = {"a": np.zeros(3), "b": 0.5, "c": jnp.zeros(2, dtype=jnp.float32)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = minimize(quadratic, x0, method="BFGS", options={"gtol": 1e-12})
        assert res.x["a"].dtype == jnp.float64 and res.x["b"].dtype == jnp.float64
        assert res.x["c"].dtype == jnp.float32
        # Beyond float32's resolution (1/3 is 2e-8 away from the nearest float32).
        assert np.max(np.abs(np.asarray(res.x["a"]) - 1.0 / 3.0)) < 1e-10


# ---- order, dtypes, pytree nodes --------------------------------------------


def test_unsorted_keys_keep_insertion_order_in_results_and_flat_order():
    x0 = {"zeta": jnp.zeros(2), "alpha": jnp.zeros(1), "mid": {"y": jnp.zeros(1), "b": jnp.zeros(2)}}
    # SciPy's flat bounds push each element onto its own lower bound: the
    # values land right only in insertion order.
    lower = [(v, 100.0) for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    res = minimize(lambda x: sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(x)), x0,
                   method="L-BFGS-B", bounds=lower)
    assert list(res.x) == ["zeta", "alpha", "mid"] and list(res.x["mid"]) == ["y", "b"]
    assert list(res.jac) == ["zeta", "alpha", "mid"] and list(res.jac["mid"]) == ["y", "b"]
    np.testing.assert_allclose(np.asarray(res.x["zeta"]), [1.0, 2.0])
    np.testing.assert_allclose(np.asarray(res.x["alpha"]), [3.0])
    np.testing.assert_allclose(np.asarray(res.x["mid"]["y"]), [4.0])
    np.testing.assert_allclose(np.asarray(res.x["mid"]["b"]), [5.0, 6.0])
    np.testing.assert_allclose(np.asarray(res.jac["zeta"]), [2.0, 4.0])


def test_flat_conversions_round_trip_and_never_alias():
    x0 = {"a": jnp.arange(3.0), "b": jnp.full((2, 2), 0.5, dtype=jnp.bfloat16)}
    layout, x = flat_point(x0)
    assert x.dtype == np.float64 and layout.info.transfer == np.float32
    np.testing.assert_array_equal(x, [0.0, 1.0, 2.0, 0.5, 0.5, 0.5, 0.5])
    leaves = BACKEND.from_flat(x, layout)
    x[:] = -1.0  # SciPy may reuse its vector: the leaves must not see it
    assert [leaf.dtype for leaf in leaves] == [jnp.float32, jnp.bfloat16]
    np.testing.assert_array_equal(np.asarray(leaves[0]), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(leaves[1], np.float32), 0.5)
    again = BACKEND.to_flat(leaves, layout)
    again[:] = 7.0
    np.testing.assert_array_equal(np.asarray(leaves[0]), [0.0, 1.0, 2.0])


def test_host_split_and_compiled_split_give_the_same_leaves(monkeypatch):
    from dict_minimize import jax_api

    monkeypatch.setattr(jax_api, "SPLIT_COMPILE_AFTER", 1)  # the first call splits on the host, then compiled
    x0 = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(2, dtype=jnp.bfloat16), "c": jnp.zeros(())}
    layout, _ = flat_point(x0)
    x = np.arange(1.0, 10.0)
    host_split, compiled_split = BACKEND.from_flat(x, layout), BACKEND.from_flat(x, layout)
    for one, other, leaf in zip(host_split, compiled_split, x0.values()):
        assert isinstance(one, jax.Array) and isinstance(other, jax.Array)
        assert one.shape == other.shape == leaf.shape and one.dtype == other.dtype == leaf.dtype
        np.testing.assert_array_equal(np.asarray(one, np.float32), np.asarray(other, np.float32))
    np.testing.assert_array_equal(np.asarray(host_split[0]), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert float(host_split[2]) == 9.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_low_precision_leaves_come_back_in_their_dtype(dtype):
    x0 = {"w": jnp.zeros(3, dtype=dtype), "v": np.zeros(2, np.float32)}
    res = minimize(lambda x: jnp.sum((x["w"].astype(jnp.float32) - 0.5) ** 2) + jnp.sum((x["v"] + 1) ** 2),
                   x0, method="L-BFGS-B")
    assert res.x["w"].dtype == jnp.dtype(dtype) and isinstance(res.x["v"], jax.Array)
    np.testing.assert_allclose(np.asarray(res.x["w"], np.float32), 0.5, atol=1e-2)


def test_non_float_leaves_name_their_key_path():
    with pytest.raises(TypeError, match=r"x0\['layer'\]\['n'\] has dtype int32"):
        minimize(lambda x: 0.0, {"layer": {"w": jnp.ones(2), "n": jnp.arange(2)}})
    with pytest.raises(TypeError, match=r"x0\['f'\] is str"):
        minimize(lambda x: 0.0, {"w": jnp.ones(2), "f": "tanh"})
    with pytest.raises(TypeError, match=r"x0\['w'\] has dtype float8_e4m3fn"):
        minimize(lambda x: 0.0, {"w": jnp.ones(2, dtype=jnp.float8_e4m3fn)})


@jax.tree_util.register_pytree_node_class
class Pair:
    """A JAX pytree node optree does not know."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def tree_flatten(self):
        return (self.first, self.second), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def test_jax_registered_node_is_a_container():
    fun = Counted(lambda x: jnp.sum((x["p"].first - 1.0) ** 2) + jnp.sum((x["p"].second + 2.0) ** 2))
    x0 = {"p": Pair(jnp.zeros(2), jnp.zeros(3))}
    res = minimize(fun, x0, method="L-BFGS-B")
    assert isinstance(res.x["p"], Pair) and isinstance(res.jac["p"], Pair)
    np.testing.assert_allclose(np.asarray(res.x["p"].first), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.x["p"].second), -2.0, atol=1e-5)
    assert fun.calls == 1
    # Flat order follows the node's own children: first, then second.
    pinned = minimize(lambda x: 0.0 * jnp.sum(x["p"].first), x0, method="L-BFGS-B",
                      bounds=[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (5.0, 5.0)])
    np.testing.assert_allclose(np.asarray(pinned.x["p"].second), [3.0, 4.0, 5.0])
    with pytest.raises(TypeError, match=r"x0\['p'\]\[1\] has dtype int32"):
        minimize(lambda x: 0.0, {"p": Pair(jnp.ones(2), jnp.arange(2))})


def test_equinox_model_parameters():
    eqx = pytest.importorskip("equinox")
    key_model, key_data = jax.random.split(jax.random.PRNGKey(0))
    model = eqx.nn.MLP(2, 1, 8, 1, activation=jnp.tanh, key=key_model)
    x = jax.random.normal(key_data, (64, 2))
    y = jnp.sin(x[:, :1]) * x[:, 1:]
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def mse(params, static, x, y):
        return jnp.mean((jax.vmap(eqx.combine(params, static))(x) - y) ** 2)

    fun = Counted(mse)
    res = minimize(fun, params, args=(static, x, y), method="L-BFGS-B", options={"maxiter": 100})
    trained = eqx.combine(res.x, static)
    assert isinstance(trained, eqx.nn.MLP)
    assert jax.tree_util.tree_structure(res.x) == jax.tree_util.tree_structure(params)
    assert res.fun < 0.2 * float(mse(params, static, x, y))
    assert float(mse(eqx.filter(trained, eqx.is_inexact_array), static, x, y)) == pytest.approx(res.fun, rel=1e-5)
    assert fun.calls == 1  # the static half (activations, sizes) is closed over
    with pytest.raises(TypeError, match=r"x0\['activation'\].*eqx.partition"):
        minimize(lambda m: 0.0, model)


def test_flax_frozendict_and_nnx_state():
    pytest.importorskip("flax")
    from flax import nnx
    from flax.core import FrozenDict

    res = minimize(lambda t: jnp.sum((t["b"] - 1.0) ** 2) + jnp.sum(t["a"] ** 2),
                   FrozenDict({"b": jnp.zeros(2), "a": jnp.ones(3)}), method="L-BFGS-B")
    assert isinstance(res.x, FrozenDict)
    np.testing.assert_allclose(np.asarray(res.x["b"]), 1.0, atol=1e-5)

    x = jnp.linspace(-1.0, 1.0, 16)[:, None]
    graphdef, state = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.Param)
    res = minimize(lambda s, x: jnp.mean((nnx.merge(graphdef, s)(x) - (3.0 * x - 2.0)) ** 2),
                   state, args=(x,), method="L-BFGS-B")
    assert type(res.x) is type(state)
    model = nnx.merge(graphdef, res.x)
    np.testing.assert_allclose(np.asarray(model(jnp.array([[0.0], [1.0]]))).ravel(), [-2.0, 1.0], atol=1e-4)


# ---- curvature and constraints by autodiff ----------------------------------


def wavy(x, scale):
    return jnp.sum(jnp.sin(x["a"]) ** 2) * jnp.sum(x["b"] ** 3) + jnp.exp(scale * x["a"][0] * x["b"][1])


def test_hessian_vector_products_match_finite_differences_in_float64():
    with enable_x64():
        layout, x = flat_point({"a": np.linspace(-1.0, 1.0, 5), "b": np.linspace(0.5, 2.0, 3)})
        assert layout.info.transfer == np.float64
        value_and_grad = BACKEND.value_and_grad(wavy, layout)
        hvp = BACKEND.linearize_grad(wavy, layout)(x, (0.7,))
        rng = np.random.default_rng(0)
        eps = 1e-5
        for _ in range(3):
            p = rng.standard_normal(layout.n)
            fd = (value_and_grad(x + eps * p, (0.7,))[1] - value_and_grad(x - eps * p, (0.7,))[1]) / (2 * eps)
            got = hvp(p)
            assert got.dtype == np.float64 and got.shape == (layout.n,)
            assert np.linalg.norm(got - fd) <= 1e-6 * np.linalg.norm(fd)


@pytest.mark.parametrize("rows", [2, 11])  # n = 7: reverse mode for 2 rows, forward mode for 11
def test_constraint_jacobian_matches_finite_differences(rows):
    def constraint(x, scale):
        z = jnp.concatenate([x["u"], jnp.ravel(x["v"])])
        return scale * jnp.stack([jnp.sin(z[i % 7]) * z[(3 * i + 1) % 7] ** 2 for i in range(rows)]).reshape(-1, 1)

    with enable_x64():
        layout, x = flat_point({"u": np.array([0.3, -0.7, 1.1]), "v": np.array([[0.5, 2.0], [-1.0, 0.25]])})
        value_and_jac = BACKEND.value_and_jac(constraint, layout)
        c, jac = value_and_jac(x, (1.5,))
        assert c.shape == (rows,) and jac.shape == (rows, 7) and jac.dtype == np.float64
        eps = 1e-6
        fd = np.stack([
            (value_and_jac(x + eps * e, (1.5,))[0] - value_and_jac(x - eps * e, (1.5,))[0]) / (2 * eps)
            for e in np.eye(7)
        ], axis=1)
        np.testing.assert_allclose(jac, fd, rtol=1e-7, atol=1e-9)


def test_constraints_without_jac_use_compiled_autodiff():
    con_fun = Counted(lambda x: jnp.sum(x["u"]) + jnp.sum(x["v"]) - 1.0)
    nonlinear = Counted(lambda x: x["u"][0] * x["v"][1])
    x0 = {"u": jnp.full(2, 0.5), "v": jnp.full(3, 0.5)}
    res = minimize(lambda x: jnp.sum(x["u"] ** 2) + jnp.sum(x["v"] ** 2), x0, method="SLSQP",
                   constraints=[{"type": "eq", "fun": con_fun}, NonlinearConstraint(nonlinear, 0.01, np.inf)])
    assert res.success
    np.testing.assert_allclose(np.concatenate([np.asarray(res.x["u"]), np.asarray(res.x["v"])]), 0.2, atol=1e-4)
    assert con_fun.calls == 1 and nonlinear.calls == 1  # traced once each, no finite differences


def test_trust_constr_with_autodiff_constraint_hessian():
    x0 = {"u": jnp.array([2.0, 0.5]), "v": jnp.array([1.0])}
    product = Counted(lambda x: x["u"][0] * x["u"][1] * x["v"][0])
    res = minimize(lambda x: jnp.sum(x["u"] ** 2) + jnp.sum(x["v"] ** 2), x0, method="trust-constr",
                   constraints=[NonlinearConstraint(product, 1.0, np.inf)])
    assert res.success and res.nit >= 5
    np.testing.assert_allclose(np.concatenate([np.asarray(res.x["u"]), np.asarray(res.x["v"])]), 1.0, atol=1e-3)
    # Traced once for value-and-Jacobian, once for the Hessian of v . c(x) (v is a traced argument).
    assert product.calls == 2


def test_vdot_is_differentiable_in_the_constraint_value():
    v = np.array([1.0, -2.0, 0.5, 3.0])
    c = jnp.arange(4.0).reshape(2, 2)
    assert float(BACKEND.vdot(v, c)) == pytest.approx(float(np.dot(v, np.arange(4.0))))
    np.testing.assert_allclose(np.asarray(jax.grad(lambda c: BACKEND.vdot(v, c))(c)), v.reshape(2, 2))


# ---- devices (a subprocess with two host devices) ---------------------------

_DEVICES_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_enable_x64", True)  # the documented global switch
    import jax.numpy as jnp, numpy as np
    from dict_minimize.jax_api import minimize

    out = {}
    d0, d1 = jax.devices()[:2]
    fun = lambda x: jnp.sum((x["a"] - 1.0) ** 2) + jnp.sum((x["b"] + 1.0) ** 2)
    x0 = {"a": jax.device_put(jnp.zeros(3, dtype=jnp.float32), d1), "b": np.zeros(2)}
    for method in ("L-BFGS-B", "trust-krylov"):
        res = minimize(fun, x0, method=method)
        out[method] = {k: [str(v.devices()), v.committed, str(v.dtype)] for k, v in res.x.items()}
        out[method + " error"] = float(abs(res.x["a"] - 1.0).max() + abs(res.x["b"] + 1.0).max())
    try:
        minimize(fun, {"a": jax.device_put(jnp.zeros(3), d0), "b": jax.device_put(jnp.zeros(2), d1)})
    except ValueError as err:
        out["two devices"] = str(err)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("i",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("i"))
    res = minimize(fun, {"a": jax.device_put(jnp.zeros(4), sharded), "b": jnp.zeros(2)}, method="trust-krylov")
    out["sharded"] = [res.x["a"].sharding == sharded, float(abs(res.x["a"] - 1.0).max())]
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def devices_run():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


@pytest.mark.parametrize("method", ["L-BFGS-B", "trust-krylov"])
def test_results_on_x0_device_with_global_x64(devices_run, method):
    placed = devices_run[method]
    assert placed["a"] == ["{CpuDevice(id=1)}", True, "float32"]
    assert placed["b"] == ["{CpuDevice(id=1)}", True, "float64"]  # NumPy leaf joins the device
    assert devices_run[method + " error"] < 1e-6


def test_leaves_on_two_devices_are_refused(devices_run):
    assert "different devices" in devices_run["two devices"]


def test_sharded_leaf_keeps_its_sharding(devices_run):
    same_sharding, error = devices_run["sharded"]
    assert same_sharding and error < 1e-6


# ---- examples ---------------------------------------------------------------


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rosenbrock_example_runs(capsys):
    res = _example("rosenbrock_jax").main(n=10)
    assert res.success and list(res.x) == ["head", "tail"]
    np.testing.assert_allclose(np.asarray(res.x["tail"]), 1.0, atol=1e-3)
    assert "x['head']" in capsys.readouterr().out


@pytest.mark.slow
def test_mnist1d_example_reduced(monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports examples/_data.py
    out = _example("mnist1d_mlp_jax").main(n_train=400, maxiter=30, verbose=False)
    assert out["nit"] <= 30 and out["final_loss"] < 0.7 * out["initial_loss"]
    assert out["test_accuracy"] > 0.2  # chance is 0.1


# ---- growing batches: a bounded number of compilations ----------------------


def _growing_run(**schedule):
    from dict_minimize import growing_batches

    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=512)).astype(np.float32)
    sizes = []

    def batches():
        for i in growing_batches(len(X), 32, growth=1.1, seed=0, **schedule):
            sizes.append(len(i))
            yield X[i], y[i]

    fun = Counted(lambda w, batch: jnp.mean((batch[0] @ w["w"] - batch[1]) ** 2))
    res = minimize(fun, {"w": jnp.zeros(3)}, method="L-BFGS-B", batches=batches(), options={"maxiter": 30})
    return res, fun.calls, sizes


def test_growing_batches_in_buckets_compile_once_per_bucket():
    res, traces, sizes = _growing_run(bucket=2.0)
    assert res.nit == 30
    assert set(sizes) <= {32, 64, 128, 256, 512}
    # One trace per distinct batch shape evaluated (the last batch drawn may go unused).
    assert 3 <= traces <= len(set(sizes)) <= 5
    np.testing.assert_allclose(np.asarray(res.x["w"]), [1.0, -2.0, 0.5], atol=0.1)
    # Without buckets every iteration brings a new shape, and a new trace.
    _, traces_unbucketed, sizes_unbucketed = _growing_run()
    assert len(set(sizes_unbucketed)) - 1 <= traces_unbucketed and traces_unbucketed >= 25
