"""torch_api's model helpers: ``parameters(module)`` and ``load_parameters(module, params)``."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.func import functional_call  # noqa: E402

from dict_minimize.torch_api import load_parameters, minimize, parameters  # noqa: E402


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(), torch.nn.Linear(6, 3),
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, copied."""
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def assert_same(a: dict, b: dict, keys) -> None:
    for key in keys:
        assert torch.equal(a[key], b[key]), key


# ---- parameters() ---------------------------------------------------------------


def test_parameters_are_detached_copies_in_named_parameters_order():
    net = small_net()
    params = parameters(net)
    assert list(params) == [name for name, _ in net.named_parameters()]
    for name, p in net.named_parameters():
        assert torch.equal(params[name], p)
        assert params[name].data_ptr() != p.data_ptr()  # a copy...
        assert not params[name].requires_grad  # ... outside autograd
    before = snapshot(net)
    for value in params.values():
        value.add_(1.0)
    assert_same(snapshot(net), before, before)  # editing the copies leaves the model alone


def test_parameters_leave_out_buffers_and_frozen_parameters():
    net = small_net()
    net[0].bias.requires_grad_(False)
    params = parameters(net)
    assert "0.bias" not in params and "0.weight" in params
    for buffer_name, _ in net.named_buffers():  # BatchNorm's running statistics
        assert buffer_name not in params
    assert set(params) == {name for name, p in net.named_parameters() if p.requires_grad}


def test_shared_parameters_appear_once():
    layer = torch.nn.Linear(3, 3)
    net = torch.nn.Sequential(layer, torch.nn.Tanh(), layer)
    assert list(parameters(net)) == ["0.weight", "0.bias"]


# ---- load_parameters() ------------------------------------------------------------


def test_round_trip_changes_exactly_the_given_parameters():
    net = small_net()
    net.train()
    net(torch.randn(8, 4))  # moves BatchNorm's running statistics off their initial values
    net.eval()
    before = snapshot(net)
    new = {name: value + 0.5 for name, value in parameters(net).items()}
    load_parameters(net, new)
    after = snapshot(net)
    assert_same(after, new, new)
    buffers = [name for name, _ in net.named_buffers()]
    assert buffers  # running_mean, running_var, num_batches_tracked
    assert_same(after, before, buffers)
    assert parameters(net).keys() == new.keys()
    assert_same(parameters(net), new, new)


def test_load_does_not_alias_the_given_tensors():
    net = small_net()
    new = {name: value * 2 for name, value in parameters(net).items()}
    load_parameters(net, new)
    new["0.weight"].zero_()
    assert not torch.equal(net[0].weight.detach(), new["0.weight"])


def test_frozen_parameters_are_left_alone():
    net = small_net()
    net[3].weight.requires_grad_(False)
    frozen = net[3].weight.detach().clone()
    load_parameters(net, {name: value - 1.0 for name, value in parameters(net).items()})
    assert torch.equal(net[3].weight.detach(), frozen)
    assert not net[3].weight.requires_grad


def test_a_subset_of_parameters_can_be_loaded():
    net = small_net()
    before = snapshot(net)
    load_parameters(net, {"3.bias": torch.full((3,), 7.0)})
    after = snapshot(net)
    assert torch.equal(after["3.bias"], torch.full((3,), 7.0))
    assert_same(after, before, [k for k in before if k != "3.bias"])


def test_float64_results_load_into_a_float32_model():
    net = small_net()
    new = {name: value.double() + 0.25 for name, value in parameters(net).items()}
    load_parameters(net, new)
    for name, p in net.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p.detach(), new[name].float())  # copy_ rounds float64 to float32


def test_unknown_name_is_an_error_that_names_it():
    net = small_net()
    with pytest.raises(ValueError, match="'2.weight'"):
        load_parameters(net, {"2.weight": torch.zeros(3)})  # the Tanh has no parameters
    with pytest.raises(ValueError, match="running_mean"):
        load_parameters(net, {"1.running_mean": torch.zeros(6)})  # a buffer, not a parameter


def test_shape_mismatch_is_an_error_that_names_the_key_and_both_shapes():
    net = small_net()
    with pytest.raises(ValueError, match=r"0\.weight.*\(4, 6\).*\(6, 4\)"):
        load_parameters(net, {"0.weight": torch.zeros(4, 6)})


def test_a_bad_entry_leaves_the_module_untouched():
    net = small_net()
    before = snapshot(net)
    with pytest.raises(ValueError):
        load_parameters(net, {"0.bias": torch.zeros(6), "3.weight": torch.zeros(2, 2)})
    assert_same(snapshot(net), before, before)  # 0.bias was not written either


# ---- training a model ------------------------------------------------------------


def test_training_a_small_model_lowers_its_loss_and_loads_back():
    torch.manual_seed(1)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # three classes
    net = small_net()
    net.eval()  # BatchNorm uses its running statistics: the loss is a fixed function of the weights
    x0 = parameters(net)
    x0_copy = {k: v.clone() for k, v in x0.items()}
    buffers_before = {name: b.clone() for name, b in net.named_buffers()}

    def loss(params):
        return torch.nn.functional.cross_entropy(functional_call(net, params, (x,)), y)

    initial = float(loss(x0))
    res = minimize(loss, x0, method="L-BFGS-B", options={"maxiter": 50})
    assert res.fun < 0.5 * initial
    assert_same(x0, x0_copy, x0)  # x0 untouched
    assert_same(parameters(net), x0_copy, x0)  # the model too, until loaded
    load_parameters(net, res.x)
    with torch.no_grad():
        assert float(loss(dict(net.named_parameters()))) == pytest.approx(res.fun, rel=1e-5)
    assert_same(dict(net.named_buffers()), buffers_before, buffers_before)


def test_training_only_the_unfrozen_parameters():
    torch.manual_seed(2)
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    net[0].requires_grad_(False)  # a frozen feature extractor
    frozen = {k: v.detach().clone() for k, v in net[0].named_parameters()}

    def loss(params):
        return ((functional_call(net, params, (x,)) - y) ** 2).mean()

    x0 = parameters(net)
    assert set(x0) == {"2.weight", "2.bias"}
    res = minimize(loss, x0, method="L-BFGS-B", options={"maxiter": 100})
    assert res.fun < float(loss(x0))
    load_parameters(net, res.x)
    for name, value in net[0].named_parameters():
        assert torch.equal(value.detach(), frozen[name])


# ---- bad arguments ------------------------------------------------------------------


def test_parameters_of_something_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match="module"):
        parameters({"w": torch.zeros(2)})


def test_load_parameters_needs_a_mapping_of_tensors():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="params"):
        load_parameters(net, [torch.zeros(2)])
    with pytest.raises(TypeError, match="bias"):
        load_parameters(net, {"bias": [1.0, 2.0]})
