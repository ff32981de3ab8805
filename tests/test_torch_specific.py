"""PyTorch specifics: devices, dtypes in transit, requires_grad for jac=True, model helpers' errors."""

import numpy as np
import pytest
import torch

from dict_minimize.core.driver import build_layout
from dict_minimize.torch_api import _BACKEND, load_parameters, minimize, parameters

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def quad(x):
    return ((x["a"] - 2.0) ** 2).sum() + ((x["b"] + 1.0) ** 2).sum()


def test_float32_travels_as_float32(monkeypatch):
    """The flat buffer handed to the device is float32 when every leaf is."""
    seen = []
    real = torch.from_numpy

    def spy(arr):
        seen.append(arr.dtype)
        return real(arr)

    monkeypatch.setattr(torch, "from_numpy", spy)
    x0 = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    res = minimize(quad, x0, method="L-BFGS-B")
    assert seen and set(seen) == {np.dtype(np.float32)}
    assert res.x["a"].dtype == torch.float32
    torch.testing.assert_close(res.x["a"], torch.full((3,), 2.0))


def test_mixed_dtypes_widen_to_float64_and_come_back():
    x0 = {"a": torch.zeros(3, dtype=torch.float16), "b": torch.zeros(2, dtype=torch.float64)}
    res = minimize(quad, x0, method="L-BFGS-B")
    assert res.x["a"].dtype == torch.float16 and res.x["b"].dtype == torch.float64
    torch.testing.assert_close(res.x["b"], torch.full((2,), -1.0, dtype=torch.float64))


def test_one_autodiff_pass_per_point():
    calls = []

    def f(x):
        calls.append(1)
        return quad(x)

    res = minimize(f, {"a": torch.zeros(3), "b": torch.zeros(2)}, method="L-BFGS-B")
    assert len(calls) == res.nfev == res.njev


def test_jac_true_leaves_require_grad():
    seen = []

    def f(x):
        seen.append(all(v.requires_grad and v.is_leaf for v in x.values()))
        v = quad(x)
        grads = torch.autograd.grad(v, list(x.values()))
        return v, dict(zip(x, grads))

    res = minimize(f, {"a": torch.zeros(3), "b": torch.zeros(2)}, jac=True, method="BFGS")
    assert seen and all(seen)
    torch.testing.assert_close(res.x["a"], torch.full((3,), 2.0), atol=1e-4, rtol=0)


def test_value_without_graph_is_a_clear_error():
    with pytest.raises(ValueError, match="does not depend on x"):
        minimize(lambda x: torch.tensor(float(quad(x))), {"a": torch.zeros(2), "b": torch.zeros(1)})


def test_parameters_round_trip_and_errors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[1].weight.requires_grad_(False)
    params = parameters(model)
    assert list(params) == ["0.weight", "0.bias", "1.bias"]
    params = {k: v + 1.0 for k, v in params.items()}
    running = model[1].running_mean.clone()
    load_parameters(model, params)
    torch.testing.assert_close(model[0].weight, params["0.weight"])
    torch.testing.assert_close(model[1].running_mean, running)
    with pytest.raises(ValueError, match="'nope'"):
        load_parameters(model, {"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="0.bias"):
        load_parameters(model, {"0.bias": torch.zeros(5)})


def test_several_devices_layout_round_trip():
    """A torch leaf beside a NumPy leaf, on one CPU device (two devices: tests/test_layout_devices.py)."""
    x0 = {"a": torch.arange(3.0), "b": np.arange(2.0)}
    layout, leaves = build_layout(_BACKEND, x0)
    flat = _BACKEND.to_flat(leaves, layout)
    np.testing.assert_array_equal(flat, [0, 1, 2, 0, 1])
    back = _BACKEND.from_flat(flat, layout)
    assert all(isinstance(v, torch.Tensor) for v in back)
    assert back[1].dtype == torch.float64


@cuda
def test_cuda_results_stay_on_the_device():
    x0 = {"a": torch.zeros(3, device="cuda"), "b": torch.zeros(2, device="cuda")}
    res = minimize(quad, x0, method="L-BFGS-B")
    assert res.x["a"].device.type == "cuda" and res.jac["a"].device.type == "cuda"
    torch.testing.assert_close(res.x["a"].cpu(), torch.full((3,), 2.0))


@cuda
def test_cuda_mixed_devices():
    x0 = {"a": torch.zeros(3, device="cuda"), "b": torch.zeros(2)}
    res = minimize(quad, x0, method="L-BFGS-B")
    assert res.x["a"].device.type == "cuda" and res.x["b"].device.type == "cpu"
    torch.testing.assert_close(res.x["b"], torch.full((2,), -1.0))


@cuda
def test_cuda_hvp_method():
    x0 = {"a": torch.zeros(3, device="cuda", dtype=torch.float64), "b": torch.zeros(2, device="cuda", dtype=torch.float64)}
    res = minimize(quad, x0, method="trust-krylov")
    assert res.success and res.x["b"].device.type == "cuda"
