"""Bounds in every form DESIGN.md accepts, on every backend.

The objective is sum((x - 2)**2) over every leaf, so the answer is 2 where
a leaf is free and the nearest bound where 2 is outside its box.

x0's keys are deliberately not sorted ('b' before 'a', 'q' before 'p'): the
flat forms follow insertion order, so the flat vector is
b (4 elements), a (3), n.q (1), n.p (2).
"""

from __future__ import annotations

import numpy as np
import optree
import pytest
from scipy.optimize import Bounds

FREE = 2.0
N = 10  # elements in x0
NAMES = ("b", "a", "q", "p")


def make_x0(h):
    return {
        "b": h.asarray(np.zeros((2, 2))),
        "a": h.asarray(np.zeros(3)),
        "n": {"q": h.asarray(0.0), "p": h.asarray(np.zeros(2))},
    }


def objective(h):
    def fun(x):
        total = 0.0
        for leaf in optree.tree_leaves(x, none_is_leaf=False):
            total = total + h.ops.sum((leaf - FREE) ** 2)
        return total

    return fun


def gradient(h):
    return lambda x: optree.tree_map(lambda leaf: 2.0 * (leaf - FREE), x, none_is_leaf=False)


def expected(**overrides):
    """The optimum by leaf name: 2 everywhere unless overridden."""
    shapes = {"b": (2, 2), "a": (3,), "q": (), "p": (2,)}
    out = {k: np.full(s, FREE) for k, s in shapes.items()}
    for k, v in overrides.items():
        out[k] = np.broadcast_to(np.asarray(v, dtype=np.float64), shapes[k])
    return out


def solve(h, method="L-BFGS-B", **kwargs):
    """Minimize with the given bounds; the optimum by leaf name, as NumPy."""
    x0 = make_x0(h)
    jac = None if method in ("Powell", "Nelder-Mead", "COBYLA", "COBYQA") else gradient(h)
    res = h.minimize(objective(h), x0, method=method, jac=jac, **kwargs)
    assert list(res.x) == ["b", "a", "n"] and list(res.x["n"]) == ["q", "p"]
    leaves = {"b": res.x["b"], "a": res.x["a"], "q": res.x["n"]["q"], "p": res.x["n"]["p"]}
    for name, leaf in leaves.items():
        assert h.is_native(leaf), name
    return {k: h.to_numpy(v).astype(np.float64) for k, v in leaves.items()}


def assert_optimum(got, want, atol=1e-6):
    for name in NAMES:
        np.testing.assert_allclose(got[name], want[name], atol=atol, err_msg=name)


# ---- per-leaf forms --------------------------------------------------------------


def test_mapping_covering_some_keys(backend):
    assert_optimum(solve(backend, bounds={"a": (None, 1.0)}), expected(a=1.0))


def test_x0_shaped_pytree_of_pairs(backend):
    bounds = {"b": (None, None), "a": (None, 1.0), "n": {"q": (-1.0, 1.0), "p": (3.0, None)}}
    assert_optimum(solve(backend, bounds=bounds), expected(a=1.0, q=1.0, p=3.0))


def test_nested_mapping_covering_some_keys(backend):
    assert_optimum(solve(backend, bounds={"n": {"p": (None, 1.0)}}), expected(p=1.0))


def test_pair_at_inner_node_applies_to_subtree(backend):
    assert_optimum(solve(backend, bounds={"n": (None, 1.0)}), expected(q=1.0, p=1.0))


def test_pair_at_root_applies_to_everything(backend):
    assert_optimum(solve(backend, bounds=(None, 1.5)), expected(b=1.5, a=1.5, q=1.5, p=1.5))


def test_array_side(backend):
    got = solve(backend, bounds={"a": (None, np.array([1.0, 5.0, 1.5]))})
    assert_optimum(got, expected(a=[1.0, 2.0, 1.5]))


def test_tensor_sides_broadcast(backend):
    h = backend
    bounds = {
        "b": (h.asarray([[3.0], [0.0]]), None),  # (2, 1) lower side: one per row
        "n": {"p": (None, h.asarray([1.0, 5.0])), "q": (h.asarray(2.5), None)},  # (2,) and 0-d sides
    }
    assert_optimum(solve(h, bounds=bounds), expected(b=[[3.0, 3.0], [2.0, 2.0]], p=[1.0, 2.0], q=2.5))


def test_none_sides_and_none_entries_are_unbounded(backend):
    got = solve(backend, bounds={"b": None, "a": (None, None), "n": {"q": (None, 0.5)}})
    assert_optimum(got, expected(q=0.5))


def test_infinite_bounds_are_fine(backend):
    got = solve(backend, bounds={"a": (-np.inf, np.inf), "b": (-np.inf, 1.0)})
    assert_optimum(got, expected(b=1.0))


def test_scipy_bounds_with_dict_sides(backend):
    h = backend
    bounds = Bounds(lb={"n": {"q": 2.5}, "b": h.asarray([[0.0], [3.0]])}, ub={"a": 1.0})
    assert_optimum(solve(h, bounds=bounds), expected(a=1.0, q=2.5, b=[[2.0, 2.0], [3.0, 3.0]]))


def test_lb_dict_ub_dict(backend):
    got = solve(backend, lb_dict={"n": {"p": 3.0}}, ub_dict={"a": 1.0, "b": 0.5})
    assert_optimum(got, expected(p=3.0, a=1.0, b=0.5))


def test_default_method_with_bounds_respects_them(backend):
    h = backend
    res = h.minimize(objective(h), make_x0(h), bounds={"a": (None, 1.0)})
    np.testing.assert_allclose(h.to_numpy(res.x["a"]), 1.0, atol=1e-6)


# ---- SciPy's flat forms (over the flat vector, insertion order) ------------------

# b: lb 3 | a: ub 1 | q: in [-1, 1] | p: free
FLAT_LB = np.array([3.0] * 4 + [-np.inf] * 3 + [-1.0] + [-np.inf] * 2)
FLAT_UB = np.array([np.inf] * 4 + [1.0] * 3 + [1.0] + [np.inf] * 2)
FLAT_ANSWER = dict(b=3.0, a=1.0, q=1.0)


def test_flat_sequence_of_pairs(backend):
    pairs = list(zip(FLAT_LB, FLAT_UB))
    assert_optimum(solve(backend, bounds=pairs), expected(**FLAT_ANSWER))


def test_flat_sequence_of_pairs_with_none_sides(backend):
    pairs = [(None if lo == -np.inf else lo, None if hi == np.inf else hi)
             for lo, hi in zip(FLAT_LB, FLAT_UB)]
    assert_optimum(solve(backend, bounds=pairs), expected(**FLAT_ANSWER))


def test_flat_scipy_bounds(backend):
    assert_optimum(solve(backend, bounds=Bounds(FLAT_LB, FLAT_UB)), expected(**FLAT_ANSWER))


def test_flat_scipy_bounds_scalar_sides(backend):
    assert_optimum(solve(backend, bounds=Bounds(-1.0, 1.0)), expected(b=1.0, a=1.0, q=1.0, p=1.0))


# ---- every method that takes bounds ----------------------------------------------

BOUNDED_METHODS = ["L-BFGS-B", "TNC", "SLSQP", "trust-constr", "Powell", "Nelder-Mead", "COBYLA", "COBYQA"]


@pytest.mark.parametrize("method", BOUNDED_METHODS)
def test_every_bounded_method_lands_on_the_bound(backend, method):
    h = backend
    x0 = {"a": h.asarray([0.0, 0.0]), "n": {"p": h.asarray(4.0)}}
    bounds = {"a": (None, 1.0), "n": (3.0, None)}
    options = {"maxfev": 4000} if method == "Nelder-Mead" else {}
    res = h.minimize(objective(h), x0, method=method, bounds=bounds, options=options,
                     jac=gradient(h) if method in ("L-BFGS-B", "TNC", "SLSQP", "trust-constr") else None)
    a = h.to_numpy(res.x["a"]).astype(np.float64)
    p = h.to_numpy(res.x["n"]["p"]).astype(np.float64)
    # trust-constr's interior point stops ~1e-4 inside the box (SciPy's own result too).
    atol = 1e-5 if method in ("L-BFGS-B", "TNC", "SLSQP") else 1e-3
    np.testing.assert_allclose(a, 1.0, atol=atol)
    np.testing.assert_allclose(p, 3.0, atol=atol)
    assert (a <= 1.0 + 1e-8).all() and (p >= 3.0 - 1e-8).all()  # never outside the box


# ---- errors -----------------------------------------------------------------------


def test_unknown_key(backend):
    h = backend
    with pytest.raises(ValueError, match="'zz'"):
        h.minimize(objective(h), make_x0(h), bounds={"a": (0, 1), "zz": (0, 1)})


def test_unknown_nested_key(backend):
    h = backend
    with pytest.raises(ValueError, match=r"\['n'\]\['zz'\]"):
        h.minimize(objective(h), make_x0(h), bounds={"n": {"zz": (0, 1)}})


def test_unknown_key_in_scipy_bounds_and_lb_dict(backend):
    h = backend
    with pytest.raises(ValueError, match="'zz'"):
        h.minimize(objective(h), make_x0(h), bounds=Bounds(lb={"zz": 0.0}, ub={"a": 1.0}))
    with pytest.raises(ValueError, match="'zz'"):
        h.minimize(objective(h), make_x0(h), ub_dict={"zz": 0.0})


def test_lb_above_ub_names_the_key(backend):
    h = backend
    with pytest.raises(ValueError, match=r"x0\['n'\]\['p'\]"):
        h.minimize(objective(h), make_x0(h), bounds={"n": {"p": (np.array([0.0, 3.0]), 1.0)}})


def test_shape_not_broadcastable_names_the_key(backend):
    h = backend
    with pytest.raises(ValueError, match=r"x0\['b'\].*broadcast"):
        h.minimize(objective(h), make_x0(h), bounds={"b": (h.asarray(np.zeros(3)), None)})


def test_bounds_and_lb_dict_together(backend):
    h = backend
    with pytest.raises(TypeError, match="lb_dict"):
        h.minimize(objective(h), make_x0(h), bounds={"a": (0, 1)}, lb_dict={"a": 0.0})


def test_wrong_number_of_flat_pairs(backend):
    h = backend
    with pytest.raises(ValueError, match="bounds"):
        h.minimize(objective(h), make_x0(h), bounds=[(0.0, 1.0)] * (N - 1))


def test_nan_bound_names_the_key(backend):
    h = backend
    with pytest.raises(ValueError, match=r"x0\['a'\].*NaN"):
        h.minimize(objective(h), make_x0(h), bounds={"a": (np.nan, 1.0)})
