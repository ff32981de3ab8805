"""TensorFlow specifics: tracing once, Variables untouched, dtypes in transit, autodiff curvature, Keras."""

import importlib.util
import pathlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from dict_minimize.core.driver import build_layout  # noqa: E402
from dict_minimize.tensorflow_api import (  # noqa: E402
    _BACKEND,
    keras_parameters,
    load_keras_parameters,
    minimize,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def quad(x):
    """Minimum: a == 2, b == -1. Per-key sums are widened: TensorFlow does not mix dtypes."""
    return (tf.cast(tf.reduce_sum((x["a"] - 2.0) ** 2), tf.float64)
            + tf.cast(tf.reduce_sum((x["b"] + 1.0) ** 2), tf.float64))


def chained_rosen(x, scale, offset):
    """Extended Rosenbrock over a dict; ``scale`` is a tensor arg, ``offset`` a Python float."""
    v = tf.concat([x["head"], tf.reshape(x["tail"], [-1])], axis=0) - offset
    return tf.reduce_sum(scale * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)


def capture(monkeypatch, hook):
    """Record the compiled functions the backend hands the driver through ``hook``."""
    made = []
    real = getattr(_BACKEND, hook)

    def spy(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(_BACKEND, hook, spy)
    return made


def test_value_and_grad_traced_once_over_a_long_run(monkeypatch):
    made = capture(monkeypatch, "value_and_grad")
    python_calls = []

    def fun(x, scale, offset):
        python_calls.append(1)  # runs only while tracing
        return chained_rosen(x, scale, offset)

    x0 = {"head": tf.fill([20], -1.0), "tail": tf.zeros([2, 10], tf.float32)}
    res = minimize(fun, x0, args=(tf.constant(100.0), 0.0), method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-8})
    assert res.nit >= 100 and res.nfev > res.nit
    (compiled,) = made
    assert compiled.tracing_count() == 1
    assert len(compiled.functions) == 1 and compiled.functions[0].experimental_get_tracing_count() == 1
    assert len(python_calls) == 1
    np.testing.assert_allclose(res.x["head"].numpy(), 1.0, atol=1e-3)


def test_hvp_traced_once_over_newton_cg(monkeypatch):
    made = capture(monkeypatch, "linearize_grad")
    x0 = {"head": tf.fill([4], tf.constant(-1.0, tf.float64)), "tail": tf.zeros([2, 3], tf.float64)}
    res = minimize(chained_rosen, x0, args=(tf.constant(100.0, tf.float64), 0.0), method="Newton-CG",
                   options={"xtol": 1e-10, "maxiter": 500})
    assert res.success, res.message
    assert res.nhev > 10  # many products, at many points
    (compiled,) = made
    assert compiled.tracing_count() == 1
    np.testing.assert_allclose(res.x["tail"].numpy(), 1.0, atol=1e-6)


LAM = 0.0  # read by `regularized` at trace time: changed between calls below


def regularized(x):
    return tf.reduce_sum((x["w"] - 1.0) ** 2) + LAM * tf.reduce_sum(x["w"] ** 2)


def test_a_global_changed_between_calls_is_seen_by_the_next_call():
    global LAM
    try:
        for LAM in (0.0, 1.0, 10.0):
            res = minimize(regularized, {"w": tf.zeros([3])}, method="L-BFGS-B")
            np.testing.assert_allclose(res.x["w"].numpy(), 1.0 / (1.0 + LAM), rtol=1e-4)
    finally:
        LAM = 0.0


@pytest.mark.parametrize("method", ["L-BFGS-B", "Newton-CG", "Nelder-Mead"])
def test_a_closure_changed_between_calls_is_seen_by_the_next_call(method):
    target = [1.0]

    def fun(x):
        return tf.reduce_sum((x["w"] - target[0]) ** 2)

    cons = [{"type": "ineq", "fun": lambda x: target[0] + 1.0 - x["w"]}]
    for value in (1.0, 3.0):
        target[0] = value
        res = minimize(fun, {"w": tf.zeros([2])}, method=method, options={"maxiter": 2000})
        np.testing.assert_allclose(res.x["w"].numpy(), value, atol=1e-3)
        constrained = minimize(fun, {"w": tf.zeros([2])}, method="SLSQP", constraints=cons)
        np.testing.assert_allclose(constrained.x["w"].numpy(), value, atol=1e-4)


def test_a_plain_function_is_traced_once_per_call_and_never_cached():
    from dict_minimize import tensorflow_api

    python_calls = []

    def fun(x, scale, offset):
        python_calls.append(1)  # runs only while tracing
        return chained_rosen(x, scale, offset)

    x0 = {"head": tf.fill([6], -1.0), "tail": tf.zeros([2, 3], tf.float32)}
    functions_before = len(tensorflow_api._CACHE)
    first = minimize(fun, x0, args=(tf.constant(100.0), 0.0), method="L-BFGS-B")
    again = minimize(fun, x0, args=(tf.constant(100.0), 0.0), method="L-BFGS-B")
    assert len(python_calls) == 2  # once per call: what fun reads may have changed in between
    assert len(tensorflow_api._CACHE) == functions_before
    np.testing.assert_array_equal(first.x["head"].numpy(), again.x["head"].numpy())


def test_a_tf_function_of_the_user_shares_traces_across_calls(monkeypatch):
    from dict_minimize import tensorflow_api

    made = capture(monkeypatch, "value_and_grad")
    compiled_fun = tf.function(chained_rosen)

    def x0(n=6):
        return {"head": tf.fill([n], -1.0), "tail": tf.zeros([2, 3], tf.float32)}

    args = (tf.constant(100.0), 0.0)
    functions_before = len(tensorflow_api._CACHE)
    first = minimize(compiled_fun, x0(), args=args, method="L-BFGS-B")
    again = minimize(compiled_fun, x0(), args=(tf.constant(100.0), 0.0), method="L-BFGS-B")
    assert len(tensorflow_api._CACHE) == functions_before + 1
    assert made[0].compiled is made[1].compiled and made[1].tracing_count() == 1  # one trace, both calls
    np.testing.assert_array_equal(first.x["head"].numpy(), again.x["head"].numpy())
    minimize(compiled_fun, x0(), args=(tf.constant(100.0), 0.5), method="L-BFGS-B")  # other static arg
    assert made[2].compiled is made[0].compiled and made[2].tracing_count() == 2
    minimize(compiled_fun, x0(7), args=args, method="L-BFGS-B")  # other shapes: another layout
    assert made[3].compiled is not made[0].compiled and made[3].tracing_count() == 1


def test_a_bound_methods_attributes_changed_between_calls_are_seen():
    class Model:
        def __init__(self):
            self.traces, self.centre = 0, 3.0

        def loss(self, x):
            self.traces += 1
            return tf.reduce_sum((x["w"] - self.centre) ** 2)

    model = Model()
    for centre in (3.0, -1.0):
        model.centre = centre
        res = minimize(model.loss, {"w": tf.zeros([2])}, method="L-BFGS-B")
        np.testing.assert_allclose(res.x["w"].numpy(), centre, atol=1e-5)
    assert model.traces == 2


def test_the_cache_does_not_keep_a_tf_function_alive():
    import gc
    import weakref

    from dict_minimize import tensorflow_api

    fun = tf.function(lambda x: tf.reduce_sum((x["w"] - 1.0) ** 2))

    gc.collect()  # earlier tests' functions that only a collection frees
    functions_before = len(tensorflow_api._CACHE)
    for method in ("L-BFGS-B", "Newton-CG", "Nelder-Mead"):
        minimize(fun, {"w": tf.zeros([3])}, method=method)
    assert len(tensorflow_api._CACHE) == functions_before + 1
    ref = weakref.ref(fun)
    del fun
    gc.collect()
    assert ref() is None
    assert len(tensorflow_api._CACHE) == functions_before


def test_gradient_free_methods_use_a_traced_value(monkeypatch):
    made = capture(monkeypatch, "value")
    python_calls = []

    def fun(x):
        python_calls.append(1)
        return tf.reduce_sum((x["a"] - 2.0) ** 2) + tf.reduce_sum((x["b"] + 1.0) ** 2)

    res = minimize(fun, {"a": tf.zeros([2]), "b": tf.zeros([3])}, method="Nelder-Mead",
                   options={"maxiter": 3000, "xatol": 1e-6, "fatol": 1e-10})
    np.testing.assert_allclose(res.x["a"].numpy(), 2.0, atol=1e-3)
    assert res.nfev > 50 and len(python_calls) == 1
    (run,) = made
    ops = {op.type for op in run.functions[0].get_concrete_function().graph.get_operations()}
    assert "SplitV" in ops and not ops & {"Reshape", "Cast"}  # 1-d float32 leaves: nothing to reshape or cast


def test_gradient_free_methods_fall_back_to_eager_for_untraceable_fun():
    eager = []

    def fun(x):
        eager.append(tf.executing_eagerly())
        return float(np.sum((x["w"].numpy() - 2.0) ** 2))  # .numpy(): impossible in a trace

    with pytest.warns(UserWarning, match=r"could not be traced.*AttributeError.*numpy.*eagerly") as seen:
        res = minimize(fun, {"w": tf.zeros([2])}, method="Powell")
    np.testing.assert_allclose(res.x["w"].numpy(), 2.0, atol=1e-4)
    assert not eager[0] and all(eager[1:])  # one failed trace, then every evaluation eagerly
    assert len(eager) > 10
    assert sum("could not be traced" in str(w.message) for w in seen) == 1  # said once


@pytest.mark.parametrize("bug", ["TypeError", "AttributeError", "NotImplementedError"])
def test_errors_that_are_not_tracing_pitfalls_do_not_fall_back(bug):
    def fun(x):
        if bug == "TypeError":
            return x["w"] + "a"  # a real bug: eager execution would fail too
        if bug == "AttributeError":
            return tf.reduce_sum(x["w"]).no_such_method()
        raise NotImplementedError("the user's own unfinished branch")

    import warnings

    error = {"TypeError": TypeError, "AttributeError": AttributeError,
             "NotImplementedError": NotImplementedError}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback warning: the error itself comes out
        with pytest.raises(error[bug]):
            minimize(fun, {"w": tf.zeros([2])}, method="Nelder-Mead")


def test_numpy_in_a_traced_objective_gets_a_hint():
    with pytest.raises(AttributeError, match=r"numpy.*run_functions_eagerly\(True\)"):
        minimize(lambda x: tf.reduce_sum(x["w"].numpy()), {"w": tf.zeros([2])}, method="L-BFGS-B")


def test_assigning_x_to_keras_variables_gets_a_hint():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    X = tf.ones([4, 3])

    def loss(params):
        for variable, value in zip(model.trainable_variables, params.values()):
            variable.assign(value)  # cuts the gradient from params
        return tf.reduce_mean(model(X) ** 2)

    with pytest.raises(ValueError, match=r"does not depend on x.*variable\.assign.*stateless_call"):
        minimize(loss, keras_parameters(model), method="L-BFGS-B")


def test_variables_untouched_and_results_are_tensors_with_x0_dtypes():
    x0 = {"a": tf.Variable([0.0, 0.0, 0.0], dtype=tf.float16),
          "b": tf.Variable(np.zeros((2, 2)), dtype=tf.float64)}
    res = minimize(quad, x0, method="L-BFGS-B")
    for key in x0:
        assert isinstance(res.x[key], tf.Tensor) and not isinstance(res.x[key], tf.Variable)
        assert res.x[key].dtype == x0[key].dtype and res.x[key].shape == x0[key].shape
        assert res.x[key].device == x0[key].device
        np.testing.assert_array_equal(x0[key].numpy(), 0.0)  # never assigned
    np.testing.assert_allclose(res.x["a"].numpy(), 2.0, atol=1e-2)
    np.testing.assert_allclose(res.x["b"].numpy(), -1.0, atol=1e-6)
    assert res.jac["b"].dtype == tf.float64


def test_float32_travels_as_float32(monkeypatch):
    buffers = []
    real = _BACKEND._buffer

    def spy(x, info, **kwargs):
        buffers.append(real(x, info, **kwargs))
        return buffers[-1]

    monkeypatch.setattr(_BACKEND, "_buffer", spy)
    made = capture(monkeypatch, "value_and_grad")
    x0 = {"a": tf.zeros([3]), "b": np.zeros((2, 2), np.float32)}
    res = minimize(quad, x0, method="L-BFGS-B")
    assert buffers and {b.dtype for b in buffers} == {tf.float32}
    (compiled,) = made
    assert compiled.functions[0].input_signature[0][0].dtype == tf.float32
    assert res.x["b"].dtype == tf.float32
    np.testing.assert_allclose(res.x["b"].numpy(), -1.0, atol=1e-5)


def test_functions_run_eagerly_for_debugging():
    """With tf.config.run_functions_eagerly(True), fun runs eagerly: even .numpy() works."""
    seen = []

    def fun(x):
        seen.append(float(x["a"].numpy()[0]))  # impossible in a trace
        return quad(x)

    tf.config.run_functions_eagerly(True)
    try:
        res = minimize(fun, {"a": tf.zeros([2]), "b": tf.zeros([1])}, method="Newton-CG")
    finally:
        tf.config.run_functions_eagerly(False)
    assert len(seen) == res.nfev + res.nhev  # one Python call per evaluation and product
    np.testing.assert_allclose(res.x["a"].numpy(), 2.0, atol=1e-5)


def _layout(x0):
    layout, leaves = build_layout(_BACKEND, x0)
    return layout, _BACKEND.to_flat(leaves, layout)


def test_hvp_matches_finite_differences_of_the_gradient():
    def fun(x, weights):
        u, w = x["u"], x["w"]
        coupling = tf.reduce_sum(tf.sin(u[:, None] * w) * weights)
        return coupling + tf.reduce_sum(tf.exp(0.3 * u)) + tf.reduce_sum(w**4)

    rng = np.random.default_rng(0)
    x0 = {"u": tf.constant(rng.normal(size=4)), "w": tf.constant(rng.normal(size=(4, 3)))}
    args = (tf.constant(rng.normal(size=(4, 3))),)
    layout, x = _layout(x0)
    value_and_grad = _BACKEND.value_and_grad(fun, layout)
    hvp = _BACKEND.linearize_grad(fun, layout)(x, args)
    step = 1e-5
    for _ in range(3):
        p = rng.normal(size=layout.n)
        fd = (value_and_grad(x + step * p, args)[1] - value_and_grad(x - step * p, args)[1]) / (2 * step)
        np.testing.assert_allclose(hvp(p), fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_constraint_jacobian_by_autodiff_both_modes():
    x0 = {"a": tf.constant([1.0, 2.0], tf.float64), "b": tf.constant([[3.0]], tf.float64)}
    layout, x = _layout(x0)

    def few(x):  # m=2 < n=3: reverse mode
        a, b = x["a"], x["b"][0, 0]
        return tf.stack([a[0] * a[1], b**2 + a[0]])

    def many(x):  # m=4 > n=3: forward mode
        a, b = x["a"], x["b"][0, 0]
        return tf.reshape(tf.stack([a[0] * b, a[1] ** 3, tf.sin(b), a[0] + a[1] + b]), (2, 2))

    c, jac = _BACKEND.value_and_jac(few, layout)(x, ())
    np.testing.assert_allclose(c, [2.0, 10.0])
    np.testing.assert_allclose(jac, [[2.0, 1.0, 0.0], [1.0, 0.0, 6.0]])
    c, jac = _BACKEND.value_and_jac(many, layout)(x, ())
    np.testing.assert_allclose(c, [3.0, 8.0, np.sin(3.0), 6.0])
    expected = [[3.0, 0.0, 1.0], [0.0, 12.0, 0.0], [0.0, 0.0, np.cos(3.0)], [1.0, 1.0, 1.0]]
    np.testing.assert_allclose(jac, expected)


def test_constrained_solution_with_autodiff_jacobian():
    """min |a - 2|^2 + |b + 1|^2 subject to sum(a) + sum(b) == 1: known optimum."""
    x0 = {"a": tf.zeros([3], tf.float64), "b": tf.zeros([2], tf.float64)}
    con = {"type": "eq", "fun": lambda x: tf.reduce_sum(x["a"]) + tf.reduce_sum(x["b"]) - 1.0}
    res = minimize(quad, x0, method="SLSQP", constraints=con)
    # Lagrange: every coordinate moves by the same shift s; 3(2+s) + 2(-1+s) = 1 -> s = -3/5.
    np.testing.assert_allclose(res.x["a"].numpy(), 1.4, atol=1e-6)
    np.testing.assert_allclose(res.x["b"].numpy(), -1.6, atol=1e-6)


def test_value_errors():
    x0 = {"a": tf.zeros([2]), "b": tf.zeros([1])}
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x["a"] ** 2, x0)
    with pytest.raises(ValueError, match="does not depend on x"):
        minimize(lambda x: tf.constant(1.0), x0)
    with pytest.raises(TypeError, match=r"x0\['b'\]"):
        minimize(quad, {"a": tf.zeros([2]), "b": tf.zeros([1], tf.int32)})


def test_stochastic_batches_reuse_the_trace(monkeypatch):
    """Batches of one shape share one trace; a smaller last batch relaxes the signature once."""
    made = capture(monkeypatch, "value_and_grad")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = X @ np.array([1.0, -2.0, 0.5], np.float32)
    batches = [(tf.constant(X[i:i + 20]), tf.constant(y[i:i + 20])) for i in range(0, 50, 20)]

    def loss(w, batch):
        xb, yb = batch
        return tf.reduce_mean((tf.linalg.matvec(xb, w["w"]) - yb) ** 2)

    res = minimize(loss, {"w": tf.zeros([3])}, method="L-BFGS-B", batches=batches, options={"maxiter": 12})
    assert res.nit == 12 and res.epochs >= 2
    (compiled,) = made
    assert compiled.tracing_count() == 2
    assert compiled.functions[-1].input_signature[1][0].shape.as_list() == [None, 3]


def test_keras_parameters_round_trip():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    params = keras_parameters(model)
    assert list(params) == [v.path for v in model.trainable_variables]
    moving_mean = model.non_trainable_variables[0].numpy().copy()
    shifted = {k: v + 1.0 for k, v in params.items()}
    load_keras_parameters(model, shifted)
    for v, k in zip(model.trainable_variables, shifted):
        np.testing.assert_array_equal(v.numpy(), shifted[k].numpy())
        np.testing.assert_array_equal(params[k].numpy() + 1.0, shifted[k].numpy())  # copies, not views
    np.testing.assert_array_equal(model.non_trainable_variables[0].numpy(), moving_mean)
    kernel = model.trainable_variables[0].path
    with pytest.raises(ValueError, match=kernel):
        load_keras_parameters(model, {**shifted, kernel: tf.zeros([5])})
    with pytest.raises(ValueError, match="missing"):
        load_keras_parameters(model, {kernel: shifted[kernel]})


def test_keras_model_fit_lowers_the_loss():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    rng = np.random.default_rng(0)
    X = tf.constant(rng.uniform(-1, 1, size=(128, 2)), tf.float32)
    y = tf.sin(3.0 * X[:, :1]) * X[:, 1:]

    def loss(params, X, y):
        pred, _ = model.stateless_call(list(params.values()), model.non_trainable_variables, X)
        return tf.reduce_mean((pred - y) ** 2)

    start = keras_parameters(model)
    before = float(loss(start, X, y))
    res = minimize(loss, start, args=(X, y), method="L-BFGS-B", options={"maxiter": 100})
    load_keras_parameters(model, res.x)
    after = float(tf.reduce_mean((model(X) - y) ** 2))
    assert after == pytest.approx(res.fun, rel=1e-4)
    assert after < 0.1 * before


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rosenbrock_example_runs():
    res, res_newton = _example("rosenbrock_tensorflow").main(verbose=False)
    assert res.success and res_newton.success
    for r in (res, res_newton):
        np.testing.assert_allclose(r.x["tail"].numpy(), 1.0, atol=1e-3)
    assert res.x["head"].dtype == tf.float32 and res_newton.x["head"].dtype == tf.float64


@pytest.mark.slow
def test_mnist1d_example_reduced(monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports examples/_data.py
    out = _example("mnist1d_mlp_tensorflow").main(n_train=400, maxiter=20, verbose=False)
    assert out["nit"] <= 20
    assert out["test_accuracy"] > 0.2  # chance is 0.1
    assert out["final_loss"] < out["initial_loss"]


def test_epochs_over_an_infinite_dataset_is_refused():
    X = np.linspace(0.0, 1.0, 40, dtype=np.float32)
    endless = tf.data.Dataset.from_tensor_slices(X).batch(10).repeat()

    def loss(w, batch):
        return tf.reduce_mean((w["m"] - batch) ** 2)

    with pytest.raises(ValueError, match=r"epochs=.*infinite.*repeat"):
        minimize(loss, {"m": tf.zeros([])}, batches=endless, epochs=1, method="L-BFGS-B")
    # Bounded by maxiter instead, the same source runs.
    res = minimize(loss, {"m": tf.zeros([])}, batches=endless, method="L-BFGS-B", options={"maxiter": 6})
    assert res.nit == 6
    # A finite dataset counts its epochs: 4 batches a pass, 2 passes.
    finite = tf.data.Dataset.from_tensor_slices(X).batch(10)
    res = minimize(loss, {"m": tf.zeros([])}, batches=finite, epochs=2, method="L-BFGS-B")
    assert res.epochs == 2 and res.nit <= 8 and res.success
