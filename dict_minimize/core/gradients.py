"""Checking and flattening derivative pytrees the user hands back."""

from __future__ import annotations

from typing import Any

import numpy as np

from .tree import Layout, flatten_with_paths, format_path, is_container


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
    single = len(layout.keys) == 1 and not layout.keys[0]  # x0 is one tensor
    tensor_like = is_leaf(tree) or not is_container(tree)
    if single and tensor_like and tuple(getattr(tree, "shape", ())) == layout.shapes[0]:
        return backend.to_flat([tree], layout)
    if single or tensor_like:
        arr = np.array(backend.to_numpy(tree), dtype=np.float64, copy=True)
        if arr.size != layout.n:
            raise ValueError(f"{what} has {arr.size} elements; x0 has {layout.n}")
        return arr.reshape(-1)
    paths, leaves, spec = flatten_with_paths(tree, is_leaf)
    if spec != layout.treespec:
        leaves = _aligned(paths, leaves, layout, what)
    for leaf, shape, path in zip(leaves, layout.shapes, layout.paths):
        got = tuple(getattr(leaf, "shape", np.shape(leaf)))
        if got != shape:
            raise ValueError(f"{what} for {path} has shape {got}; x0 there has shape {shape}")
    return backend.to_flat(leaves, layout)
