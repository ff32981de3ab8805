"""The stochastic mode: ``batches=``, ``epochs=``, restarts, limits.

The objective is a pseudo-Huber bowl per minibatch,
``f_b(x) = sum(sqrt(1 + (x - c_b)^2)) + offset_b``, whose centre ``c_b``
and offset differ between batches. Batches are tracked from the outside:
:class:`Tracked` records which batch the library pulled last, so every
check compares what the run did with the batch that was current at the time.

Tests that need ``fun`` to be called eagerly (to record what it is handed)
use ``jac=True``, which every backend calls eagerly; the others use the
backend's autodiff (``ad_backend``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from dict_minimize.core import driver

# JAX without x64 makes the float64 batches float32 (and says so); rtol() allows for it.
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")

N = 5  # parameters
START = 4.0  # x0, far from every batch's centre


# ---- helpers -------------------------------------------------------------------


class Tracked:
    """A re-iterable batch source that records which batch was pulled last.

    ``iter()`` returns a new generator each time (so it is re-iterable, like
    a list); ``current`` is the index of the batch last handed out and
    ``pulls`` every index handed out, in order.
    """

    def __init__(self, batches: list):
        self.batches = batches
        self.current: int | None = None
        self.pulls: list[int] = []

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            self.current = i
            self.pulls.append(i)
            yield batch


def centres_and_offsets(n_batches: int, offset_scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(N), offset_scale * rng.standard_normal()) for _ in range(n_batches)]


def make_batches(h, n_batches: int, offset_scale: float = 0.0, seed: int = 0) -> list[dict]:
    """Minibatches as dicts of native tensors (float64): ``{"c": (N,), "offset": ()}``."""
    return [
        {"c": h.asarray(c), "offset": h.asarray(offset)}
        for c, offset in centres_and_offsets(n_batches, offset_scale, seed)
    ]


def f_numpy(x: np.ndarray, batch: dict, h) -> tuple[float, np.ndarray]:
    """Reference value and gradient of the objective on ``batch``, in NumPy."""
    d = x - h.to_numpy(batch["c"])
    r = np.sqrt(1.0 + d**2)
    return float(r.sum() + h.to_numpy(batch["offset"])), d / r


def objective(h):
    """``fun(x, batch)`` with autodiff gradients (for ``ad_backend``)."""
    ops = h.ops

    def fun(x, batch):
        return ops.sum(ops.sqrt(1.0 + (x["x"] - batch["c"]) ** 2)) + batch["offset"]

    return fun


def objective_with_gradient(h, seen: list | None = None, source: Tracked | None = None):
    """``fun(x, batch) -> (value, gradient)`` (``jac=True``), recording what it is handed.

    Each call appends ``(index of the batch passed, source.current)`` to ``seen``.
    """
    ops = h.ops

    def fun(x, batch):
        if seen is not None:
            index = next(i for i, b in enumerate(source.batches) if b is batch)
            seen.append((index, source.current))
        d = x["x"] - batch["c"]
        r = ops.sqrt(1.0 + d**2)
        return ops.sum(r) + batch["offset"], {"x": d / r}

    return fun


def x0(h):
    return {"x": h.asarray(np.full(N, START))}


def rtol(h) -> float:
    """Agreement to expect with the float64 reference: JAX without x64 computes in float32.

    Either way far below the O(1) difference between two batches' values.
    """
    return 1e-12 if h.dtype_name(h.asarray([1.0])) == "float64" else 1e-5


# ---- the batch seen by fun, and when it changes -------------------------------


def test_fun_sees_the_current_batch_and_the_batch_changes_after_every_iteration(backend):
    source = Tracked(make_batches(backend, 40))
    seen, at_callback = [], []

    def callback(intermediate_result):
        at_callback.append(source.current)

    fun = objective_with_gradient(backend, seen, source)
    res = backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=source,
                           callback=callback, options={"maxiter": 12})
    assert res.nit == 12
    # Every evaluation got the batch the library held at that moment...
    assert seen and all(passed == current for passed, current in seen)
    # ... and the library moved to the next batch after each iteration, only then.
    assert at_callback == list(range(12))
    assert sorted({passed for passed, _ in seen}) == list(range(12))
    np.testing.assert_array_equal(res.history["nit"], np.arange(1, 13))
    assert len(res.history["fun"]) == len(at_callback)


def test_history_records_each_iterations_value_on_its_own_batch(ad_backend):
    h = ad_backend
    batches = make_batches(h, 30)
    xs = []

    def callback(intermediate_result):
        xs.append(h.to_numpy(intermediate_result.x["x"]).copy())

    res = h.minimize(objective(h), x0(h), method="L-BFGS-B", batches=batches, callback=callback,
                     options={"maxiter": 10})
    assert res.nit == 10 == len(xs)
    # Iteration k (from 1) ran on batch k - 1: its recorded value is f on that batch.
    expected = [f_numpy(x, batches[k], h)[0] for k, x in enumerate(xs)]
    np.testing.assert_allclose(res.history["fun"], expected, rtol=rtol(h))


def _spy_on_scipy(monkeypatch, source: Tracked) -> list:
    """Record every value and gradient SciPy receives, with the batch current at the time."""
    served = []
    real_minimize = driver.scipy_minimize  # the driver binds SciPy's minimize at import

    def spying_minimize(fun, x0, *args, jac=None, **kwargs):
        def spied_fun(x, *a):
            value = fun(x, *a)
            served.append(("fun", np.array(x, copy=True), value, source.current))
            return value

        spied_jac = jac
        if callable(jac):
            def spied_jac(x, *a):
                grad = jac(x, *a)
                served.append(("jac", np.array(x, copy=True), np.array(grad, copy=True), source.current))
                return grad

        return real_minimize(spied_fun, x0, *args, jac=spied_jac, **kwargs)

    monkeypatch.setattr(driver, "scipy_minimize", spying_minimize)
    return served


def test_no_value_or_gradient_from_an_earlier_batch_is_served(ad_backend, monkeypatch):
    h = ad_backend
    # Offsets this large make the line search fail on most new batches, so the
    # run also goes through restarts at a point already evaluated on the old batch.
    source = Tracked(make_batches(h, 60, offset_scale=50.0))
    served = _spy_on_scipy(monkeypatch, source)
    res = h.minimize(objective(h), x0(h), method="L-BFGS-B", batches=source, options={"maxiter": 15})
    assert res.nit == 15 and res.restarts > 0
    kinds = {kind for kind, *_ in served}
    assert kinds == {"fun", "jac"}
    for kind, x, out, current in served:
        value, grad = f_numpy(x, source.batches[current], h)
        if kind == "fun":
            assert out == pytest.approx(value, rel=rtol(h))
        else:
            np.testing.assert_allclose(out, grad, rtol=rtol(h), atol=rtol(h))
    # The spy saw evaluations on many batches, not only the first.
    assert len({current for *_, current in served}) > 10


# ---- restarts and iteration counts ------------------------------------------------


def test_noisy_objective_restarts_instead_of_stopping_and_maxiter_counts_across_restarts(ad_backend):
    h = ad_backend
    batches = make_batches(h, 100, offset_scale=50.0)
    calls = []
    res = h.minimize(objective(h), x0(h), method="L-BFGS-B", batches=batches,
                     callback=lambda intermediate_result: calls.append(1), options={"maxiter": 25})
    # L-BFGS-B's line search fails whenever a new batch's offset is higher;
    # the run resumes from the current point instead of ending there.
    assert res.restarts > 0
    assert res.nit == 25 == len(calls)
    np.testing.assert_array_equal(res.history["nit"], np.arange(1, 26))
    assert "ITERATIONS REACHED LIMIT" in res.message


def test_history_off_still_counts_iterations_across_restarts(ad_backend):
    """history=False drops the record only: the minibatch swap still runs per iteration and maxiter holds."""
    h = ad_backend
    res = h.minimize(objective(h), x0(h), method="L-BFGS-B", batches=make_batches(h, 100, offset_scale=50.0),
                     options={"maxiter": 25}, history=False)
    assert res.restarts > 0 and res.nit == 25 and "history" not in res


def test_nfev_counts_every_evaluation_across_restarts(backend):
    source = Tracked(make_batches(backend, 100, offset_scale=50.0))
    seen = []
    fun = objective_with_gradient(backend, seen, source)
    res = backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=source,
                           options={"maxiter": 20})
    assert res.restarts > 0 and res.nit == 20
    assert res.nfev == len(seen)


def test_nfev_counts_every_evaluation_when_epochs_end_the_run_after_restarts(backend):
    source = Tracked(make_batches(backend, 4, offset_scale=100.0))
    seen = []
    fun = objective_with_gradient(backend, seen, source)
    res = backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=source, epochs=5,
                           options={"maxiter": 1000})
    assert res.restarts > 0 and res.epochs == 5
    assert res.nfev == len(seen)


# ---- sources: lists, DataLoaders, one-shot iterators ---------------------------------


def test_a_list_is_reiterated_and_epochs_stops_after_that_many_passes(backend):
    source = Tracked(make_batches(backend, 3))
    at_callback = []
    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=source, epochs=2, options={"maxiter": 1000},
                           callback=lambda intermediate_result: at_callback.append(source.current))
    assert res.success and res.status == 0
    assert "2 epoch" in res.message
    assert res.epochs == 2
    assert at_callback == [0, 1, 2, 0, 1, 2] and res.nit == 6
    np.testing.assert_array_equal(res.history["epoch"], [0, 0, 0, 1, 1, 1])


def test_a_plain_list_of_batches_works_with_autodiff(ad_backend):
    h = ad_backend
    batches = make_batches(h, 4)  # a list, not a Tracked source
    res = h.minimize(objective(h), x0(h), method="L-BFGS-B", batches=batches, epochs=3,
                     options={"maxiter": 1000})
    assert res.epochs == 3 and res.nit == 12
    # The batches' centres are standard normal: the iterate moved there from START.
    assert np.all(np.abs(h.to_numpy(res.x["x"])) < START - 1)


def test_a_one_shot_iterator_ends_the_run_when_exhausted(backend):
    batches = make_batches(backend, 5)
    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=iter(batches), options={"maxiter": 1000})
    assert res.success and res.status == 0
    assert "exhausted" in res.message
    assert res.nit == 5 and res.epochs == 1


def test_a_generator_needs_no_other_limit(backend):
    def generate():
        yield from make_batches(backend, 4)

    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=generate())
    assert res.success and res.nit == 4


def test_a_generator_longer_than_maxiter_stops_at_maxiter(backend):
    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=iter(make_batches(backend, 50)), options={"maxiter": 7})
    assert res.nit == 7 and res.epochs == 0
    assert "ITERATIONS REACHED LIMIT" in res.message


def test_dataloader_is_reiterated_every_epoch_and_reshuffled():
    torch = pytest.importorskip("torch")
    from dict_minimize.torch_api import minimize

    ids = torch.arange(12, dtype=torch.float64)
    targets = 2.0 * ids + 1.0
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ids, targets), batch_size=4, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    seen_per_iteration, current = [], {}

    def loss(params, batch):
        x, y = batch
        current["ids"] = x.tolist()
        return ((params["w"] * x + params["b"] - y) ** 2).mean()

    x0 = {"w": torch.zeros((), dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    res = minimize(loss, x0,
                   method="L-BFGS-B", batches=loader, epochs=3, options={"maxiter": 1000},
                   callback=lambda intermediate_result: seen_per_iteration.append(current["ids"]))
    assert res.epochs == 3 and res.nit == 9
    epochs = [sum(seen_per_iteration[3 * e:3 * e + 3], []) for e in range(3)]
    for ids_in_epoch in epochs:
        assert sorted(ids_in_epoch) == list(range(12))  # every sample once per epoch
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled
    assert float(res.x["w"]) == pytest.approx(2.0, abs=0.2)


# ---- limits, progress, errors ----------------------------------------------------


def test_max_time_stops_the_stochastic_mode(backend):
    source = Tracked(make_batches(backend, 3))
    slow = objective_with_gradient(backend)

    def fun(x, batch):
        time.sleep(0.01)
        return slow(x, batch)

    res = backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=source, max_time=0.2,
                           options={"maxiter": 100_000})  # maxiter: only so that a bug cannot hang the suite
    assert not res.success
    assert "max_time" in res.message
    assert 1 <= res.nit < 100_000
    # x and fun agree, on the batch current when the clock ran out.
    value, _ = f_numpy(backend.to_numpy(res.x["x"]), source.batches[source.current], backend)
    assert res.fun == pytest.approx(value, rel=rtol(backend))


def test_progress_bar_shows_the_epoch(backend, capsys):
    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=make_batches(backend, 2), epochs=3, options={"maxiter": 1000},
                           progress=True)
    assert res.nit == 6
    err = capsys.readouterr().err
    assert "epoch=2" in err  # the last iteration ran in the third pass (epochs counted from 0)
    assert "6/1000" in err  # iterations out of maxiter


def test_a_reiterable_source_without_a_limit_is_an_error(backend):
    with pytest.raises(ValueError, match="needs a limit"):
        backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                         batches=make_batches(backend, 3))


def test_epochs_without_batches_is_a_type_error(backend):
    with pytest.raises(TypeError, match="epochs"):
        backend.minimize(lambda x: (x["x"] ** 2).sum(), x0(backend), method="L-BFGS-B", epochs=2)


@pytest.mark.parametrize("epochs", [0, -1, 1.5])
def test_epochs_must_be_a_positive_integer(backend, epochs):
    with pytest.raises(ValueError, match="epochs"):
        backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                         batches=make_batches(backend, 3), epochs=epochs)


def test_batches_must_be_iterable_and_not_empty(backend):
    fun = objective_with_gradient(backend)
    with pytest.raises(TypeError, match="batches"):
        backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=3, options={"maxiter": 5})
    with pytest.raises(ValueError, match="empty"):
        backend.minimize(fun, x0(backend), jac=True, method="L-BFGS-B", batches=[], options={"maxiter": 5})


# ---- growing_batches ---------------------------------------------------------------


def _take(n_batches: int, *args, **kwargs) -> list[np.ndarray]:
    from dict_minimize import growing_batches

    stream = growing_batches(*args, **kwargs)
    return [next(stream) for _ in range(n_batches)]


def test_growing_batches_grow_geometrically_to_the_full_set():
    batches = _take(8, 100, 10, growth=2.0, seed=0)
    assert [len(b) for b in batches] == [10, 20, 40, 80, 100, 100, 100, 100]
    # Once full, every batch is the whole set, in order.
    np.testing.assert_array_equal(batches[-1], np.arange(100))
    # 0.4 * 20 = 8 growth steps from 50 reach 400 exactly despite the rounding of 8 ** (1 / 8) ** 8.
    sizes = [len(b) for b in _take(10, 400, 50, growth=8 ** (1 / 8), seed=0)]
    assert sizes[8] == 400 and sizes[7] < 400


@pytest.mark.parametrize("n, size, overlap", [(100, 10, 0.0), (100, 10, 0.5), (37, 5, 0.3), (10, 9, 0.5)])
def test_growing_batches_share_the_overlap_and_never_repeat_a_sample_within_a_batch(n, size, overlap):
    batches = _take(300, n, size, overlap=overlap, seed=1)
    assert all(len(b) == size and b.dtype == np.int64 for b in batches)
    assert all(len(np.unique(b)) == size for b in batches)
    assert all(0 <= b.min() and b.max() < n for b in batches)
    shared = [len(np.intersect1d(a, b)) for a, b in zip(batches, batches[1:])]
    expected = size - max(1, int(size * (1 - overlap)))
    # Exactly the overlap within a pass; across passes (and always when the
    # batches hold most of the data) two batches may share more.
    assert min(shared) >= expected
    if 2 * size <= n:
        assert np.median(shared) == expected


def test_growing_batches_without_overlap_visit_every_sample_once_per_pass():
    batches = _take(50, 100, 10, seed=2)  # five passes of ten batches
    counts = np.bincount(np.concatenate(batches), minlength=100)
    np.testing.assert_array_equal(counts, 5)
    assert len(np.unique(np.concatenate(batches[:10]))) == 100


def test_growing_batches_in_buckets_take_a_few_sizes_and_fill_up_when_unbucketed_do():
    bucketed = [len(b) for b in _take(700, 4000, 250, growth=1.0046, seed=0, bucket=2.0)]
    full = [len(b) for b in _take(700, 4000, 250, growth=1.0046, seed=0)]
    assert set(bucketed) == {250, 500, 1000, 2000, 4000}  # log2(4000 / 250) + 1 sizes
    assert len(set(full)) > 500  # without buckets: a new size nearly every iteration
    assert bucketed.index(4000) == full.index(4000)  # the full set from the same iteration on
    assert all(b <= f for b, f in zip(bucketed, full))  # each rounded down, never up
    batches = _take(30, 100, 10, growth=1.2, overlap=0.5, seed=1, bucket=2.0)
    assert all(len(np.unique(b)) == len(b) for b in batches)  # real, distinct samples: no padding


def test_growing_batches_are_reproducible_from_the_seed():
    a, b, c = (_take(20, 50, 7, growth=1.1, overlap=0.4, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=0, start=1), ValueError, "n must be a positive integer"),
    (dict(n=2.5, start=1), TypeError, "n must be an integer"),
    (dict(n=10, start=0), ValueError, "start must be a positive integer"),
    (dict(n=10, start=2, growth=0.9), ValueError, "growth"),
    (dict(n=10, start=2, growth=float("inf")), ValueError, "growth"),
    (dict(n=10, start=2, overlap=1.0), ValueError, "overlap"),
    (dict(n=10, start=2, overlap=-0.1), ValueError, "overlap"),
    (dict(n=10, start=2, bucket=1.0), ValueError, "bucket"),
    (dict(n=10, start=2, bucket=float("nan")), ValueError, "bucket"),
])
def test_growing_batches_reject_bad_arguments_early(kwargs, error, match):
    from dict_minimize import growing_batches

    with pytest.raises(error, match=match):
        growing_batches(**kwargs)  # raised at the call, before the first batch


def test_the_stochastic_mode_runs_on_growing_batches(backend):
    from dict_minimize import growing_batches

    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, N))
    sizes = []

    def batches():
        for i in growing_batches(len(data), 4, growth=1.5, overlap=0.5, seed=0):
            sizes.append(len(i))
            yield {"c": backend.asarray(data[i].mean(axis=0)), "offset": backend.asarray(0.0)}

    res = backend.minimize(objective_with_gradient(backend), x0(backend), jac=True, method="L-BFGS-B",
                           batches=batches(), options={"maxiter": 15})
    assert sizes[:3] == [4, 6, 9] and sizes[-1] == 64
    # From the eighth batch on the objective is the same each time: x ends at
    # the data's mean (in float64 the run stops early, having converged there).
    assert 8 <= res.nit <= 15
    atol = 1e-4 if rtol(backend) < 1e-6 else 1e-3
    np.testing.assert_allclose(backend.to_numpy(res.x["x"]), data.mean(axis=0), atol=atol)


def test_growing_batches_docstring_example_runs():
    import doctest

    from dict_minimize.core import stochastic

    result = doctest.testmod(stochastic)
    assert result.attempted >= 3 and result.failed == 0
