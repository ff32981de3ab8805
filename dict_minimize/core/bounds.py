"""Bounds in every accepted form, translated to one flat ``scipy.optimize.Bounds``.

Per-leaf forms (a mapping covering some keys, an x0-shaped pytree of
``(lb, ub)`` pairs, a ``Bounds`` whose ``lb``/``ub`` are pytrees,
``lb_dict=``/``ub_dict=``) are matched against x0 as prefix trees: a pair
placed at an inner node applies to every leaf below it. SciPy's flat forms
(a sequence of exactly n scalar pairs, a ``Bounds`` of flat arrays) pass
through as SciPy reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optree
from scipy.optimize import Bounds

from .tree import NAMESPACE, Layout, format_path, is_container


#: Keys listed in the message for a key x0 does not have.
MAX_KEYS_SHOWN = 20

PAIRS_HINT = (
    "for per-element bounds pass one (lb_array, ub_array) pair, e.g. "
    "(np.array([0, 0]), np.array([1, 2])) for [(0, 1), (0, 2)]"
)


def _per_element_pairs(pair: Any) -> bool:
    """SciPy's flat spelling, ``[(lo, hi), (lo, hi), ...]``, given for one parameter."""
    return isinstance(pair, list) and len(pair) > 0 and all(
        isinstance(p, tuple) and len(p) == 2 and all(_is_scalar(v) for v in p) for p in pair
    )


def _is_scalar(obj: Any) -> bool:
    return obj is None or (not is_container(obj) and np.ndim(obj) == 0)


def _is_pair(b: Any) -> bool:
    if isinstance(b, np.ndarray):
        return b.shape == (2,)
    return isinstance(b, (list, tuple)) and len(b) == 2 and all(_is_scalar(v) for v in b)


def _is_flat_pairs(bounds: Any, n: int) -> bool:
    """SciPy's old form: exactly n ``(lb, ub)`` pairs of scalars (a sequence, or an ``(n, 2)`` array)."""
    if isinstance(bounds, np.ndarray):
        return bounds.shape == (n, 2)
    return isinstance(bounds, (list, tuple)) and len(bounds) == n and all(_is_pair(b) for b in bounds)


def _unwrap(side: Any) -> Any:
    """``Bounds`` stores a dict ``lb`` as a one-element object array; get the dict back."""
    if isinstance(side, np.ndarray) and side.dtype == object and side.size == 1:
        return side.reshape(-1)[0]
    return side


def _children(node: Any):
    """(entries, children) of one container level, dicts in insertion order."""
    with optree.dict_insertion_ordered(True, namespace=NAMESPACE):
        children, _, entries, _ = optree.tree_flatten_one_level(
            node, none_is_leaf=False, namespace=NAMESPACE
        )
    return entries, children


def _walk(x_node, b_node, path, out, pairs, is_leaf):
    """Assign the bounds node ``b_node`` to every leaf of ``x_node``.

    ``out`` receives ``(path, value)`` per leaf in flat order; ``pairs``
    says whether values are ``(lb, ub)`` pairs or one side of the bounds.
    """
    x_is_leaf = is_leaf(x_node) or not is_container(x_node)
    if x_is_leaf:
        out.append((path, b_node))
        return
    applies_whole = b_node is None or (
        (isinstance(b_node, (list, tuple)) and len(b_node) == 2
         and not any(is_container(v) for v in b_node))
        if pairs else not is_container(b_node)
    )
    entries, children = _children(x_node)
    if applies_whole:
        for entry, child in zip(entries, children):
            _walk(child, b_node, path + (entry,), out, pairs, is_leaf)
        return
    if isinstance(b_node, Mapping):
        fields = getattr(x_node, "_fields", None)
        keys = list(fields) if fields is not None else entries
        unknown = [k for k in b_node if k not in keys]
        if unknown:
            shown = ", ".join(repr(k) for k in keys[:MAX_KEYS_SHOWN])
            more = f" and {len(keys) - MAX_KEYS_SHOWN} more" if len(keys) > MAX_KEYS_SHOWN else ""
            raise ValueError(
                f"bounds name {format_path(path + (unknown[0],))}, which x0 does not have; "
                f"{format_path(path)} has keys {shown}{more}"
            )
        for key, entry, child in zip(keys, entries, children):
            _walk(child, b_node.get(key), path + (entry,), out, pairs, is_leaf)
        return
    if isinstance(b_node, Sequence) and not isinstance(b_node, str):
        if len(b_node) != len(children):
            raise ValueError(
                f"bounds for {format_path(path)} have {len(b_node)} entries; "
                f"x0 has {len(children)} there"
            )
        for entry, child, b_child in zip(entries, children, b_node):
            _walk(child, b_child, path + (entry,), out, pairs, is_leaf)
        return
    raise ValueError(f"bounds for {format_path(path)} must be a mapping, a sequence or an (lb, ub) pair")


def _side_array(value, shape, path, backend, default):
    if value is None:
        return np.full(shape, default)
    arr = np.asarray(backend.to_numpy(value), dtype=np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"bounds for {path} contain NaN")
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"bounds for {path} have shape {arr.shape}, not broadcastable to the "
            f"parameter's shape {shape}"
        ) from None


def _per_leaf(x0, b_tree, layout, pairs, is_leaf):
    out: list = []
    _walk(x0, b_tree, (), out, pairs, is_leaf)
    assert len(out) == len(layout.shapes)
    return [v for _, v in out]


def make_bounds(
    bounds: Any,
    lb_dict: Any,
    ub_dict: Any,
    x0: Any,
    layout: Layout,
    backend,
    is_leaf,
) -> Bounds | None:
    """Translate the user's bounds to a flat ``Bounds`` over layout's vector, or ``None``."""
    if bounds is None and lb_dict is None and ub_dict is None:
        return None
    if bounds is not None and (lb_dict is not None or ub_dict is not None):
        raise TypeError("give either `bounds` or `lb_dict`/`ub_dict`, not both")

    n = layout.n
    keep_feasible = False
    if isinstance(bounds, Bounds):
        lb_tree, ub_tree = _unwrap(bounds.lb), _unwrap(bounds.ub)
        keep_feasible = bounds.keep_feasible
        if not (is_container(lb_tree) or is_container(ub_tree)):
            return _checked(Bounds(bounds.lb, bounds.ub, keep_feasible), layout)
        lbs = _per_leaf(x0, lb_tree, layout, False, is_leaf)
        ubs = _per_leaf(x0, ub_tree, layout, False, is_leaf)
    elif bounds is None:
        lbs = _per_leaf(x0, lb_dict, layout, False, is_leaf)
        ubs = _per_leaf(x0, ub_dict, layout, False, is_leaf)
    elif _is_flat_pairs(bounds, n):
        arr = np.array(
            [[-np.inf if lo is None else lo, np.inf if hi is None else hi] for lo, hi in bounds],
            dtype=np.float64,
        ).reshape(n, 2)
        # As SciPy reads its old form: NaN means unbounded.
        lb = np.where(np.isnan(arr[:, 0]), -np.inf, arr[:, 0])
        ub = np.where(np.isnan(arr[:, 1]), np.inf, arr[:, 1])
        return _checked(Bounds(lb, ub), layout)
    else:
        pairs = _per_leaf(x0, bounds, layout, True, is_leaf)
        lbs, ubs = [], []
        for path, pair in zip(layout.paths, pairs):
            if pair is None:
                pair = (None, None)
            if _per_element_pairs(pair) and not is_container(x0):
                # SciPy's flat form with the wrong count: SciPy's message.
                raise ValueError(
                    "The number of bounds is not compatible with the length of `x0`. "
                    f"x0 has {n} elements; the bounds have {len(pair)}."
                )
            if _per_element_pairs(pair):
                # Ambiguous at two elements ((0, 1) read as lb, (0, 2) as ub): never guess.
                raise ValueError(f"bounds for {path} are a list of (lb, ub) pairs; {PAIRS_HINT}")
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise ValueError(f"bounds for {path} must be an (lb, ub) pair, got {pair!r}")
            lbs.append(pair[0])
            ubs.append(pair[1])

    lb = np.empty(n)
    ub = np.empty(n)
    for path, shape, o, s, lo, hi in zip(layout.paths, layout.shapes, layout.offsets, layout.sizes, lbs, ubs):
        lb[o : o + s] = _side_array(lo, shape, path, backend, -np.inf).reshape(-1)
        ub[o : o + s] = _side_array(hi, shape, path, backend, np.inf).reshape(-1)
    return _checked(Bounds(lb, ub, keep_feasible), layout)


def _checked(b: Bounds, layout: Layout) -> Bounds:
    # Messages start with SciPy's own sentences: drop-in users match on them.
    lb, ub = np.asarray(b.lb, dtype=np.float64), np.asarray(b.ub, dtype=np.float64)
    if lb.size not in (1, layout.n) or ub.size not in (1, layout.n):
        raise ValueError(
            "The number of bounds is not compatible with the length of `x0`. "
            f"x0 has {layout.n} elements; the bounds have {max(lb.size, ub.size)}."
        )
    lb = np.broadcast_to(lb.reshape(-1), (layout.n,))
    ub = np.broadcast_to(ub.reshape(-1), (layout.n,))
    bad = np.flatnonzero(lb > ub)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            "An upper bound is less than the corresponding lower bound. "
            f"In {layout.path_of_index(i)} (flat index {i}): {lb[i]} > {ub[i]}."
        )
    return b
