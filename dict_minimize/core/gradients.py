"""Checking and flattening derivative pytrees the user hands back."""

from __future__ import annotations

from typing import Any

import numpy as np

import optree

from .tree import NAMESPACE, Layout, flatten_with_paths, format_path


def _as_flat_array(arr) -> np.ndarray:
    """A new float64 array (complex128 under SciPy's complex-step differences)."""
    arr = np.asarray(arr)
    return np.array(arr, dtype=np.result_type(arr.dtype, np.float64), copy=True)


def _aligned(paths, leaves, layout: Layout, what: str) -> list:
    """Leaves reordered to x0's layout, or a ValueError naming the key at fault."""
    by_path = dict(zip(map(tuple, paths), leaves))
    missing = [p for p, k in zip(layout.paths, layout.keys) if tuple(k) not in by_path]
    if missing:
        raise ValueError(f"{what} is missing {missing[0]} (it must have x0's structure)")
    extra = set(by_path) - {tuple(k) for k in layout.keys}
    if extra:
        raise ValueError(f"{what} has {format_path(sorted(extra, key=repr)[0])}, which x0 does not have")
    return [by_path[tuple(k)] for k in layout.keys]


def flat_gradient(backend, layout: Layout, tree: Any, is_leaf, what: str = "the gradient") -> np.ndarray:
    """A gradient-like pytree (x0's structure and shapes) as one flat float64 vector.

    A single array with n elements is also accepted as the flat vector
    itself, which is what SciPy users hand back.
    """
    # Hot path (every evaluation with jac=True): one flatten, no key paths
    # unless the structure differs from x0's; none for SciPy's own case.
    if type(tree) is np.ndarray and len(layout.shapes) == 1 and tree.shape == layout.shapes[0]:
        return backend.to_flat([tree], layout)
    keys = layout.dict_keys
    if keys is not None and type(tree) is dict and tuple(tree) == keys:
        # x0 a plain dict and the gradient the same dict of tensors: no flatten.
        leaves = list(tree.values())
        try:
            same_shapes = [leaf.shape for leaf in leaves] == layout.shape_list
        except AttributeError:  # a float or a container: the general path says what is wrong
            same_shapes = False
        if same_shapes:
            return backend.to_flat(leaves, layout)
    with optree.dict_insertion_ordered(True, namespace=NAMESPACE):
        leaves, spec = optree.tree_flatten(tree, is_leaf=is_leaf, none_is_leaf=False, namespace=NAMESPACE)
    if spec != layout.treespec:
        single = len(layout.keys) == 1 and not layout.keys[0]  # x0 is one tensor
        if single or spec.num_nodes == 1:
            # SciPy users return a list or an array: the flat vector itself.
            arr = _as_flat_array(backend.to_numpy(tree))
            if arr.size != layout.n:
                raise ValueError(f"{what} has {arr.size} elements; x0 has {layout.n}")
            return arr.reshape(-1)
        paths, leaves, _ = flatten_with_paths(tree, is_leaf)
        leaves = _aligned(paths, leaves, layout, what)
    for leaf, shape, path in zip(leaves, layout.shapes, layout.paths):
        got = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)
        if tuple(got) != shape:
            if len(layout.shapes) == 1 and np.size(leaf) == layout.n:
                return _as_flat_array(backend.to_numpy(leaf)).reshape(-1)
            raise ValueError(f"{what} for {path} has shape {tuple(got)}; x0 there has shape {shape}")
    return backend.to_flat(leaves, layout)
