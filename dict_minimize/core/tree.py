"""Pytrees and the flat layout: how a pytree of tensors maps to one flat vector.

Flat order is x0's leaf order (dict insertion order, depth first), each leaf
in C order. optree sorts dict keys by default, so every flatten here runs in
its insertion-ordered mode, in this package's own optree namespace.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import optree

NAMESPACE = "dict_minimize"


def flatten_with_paths(tree: Any, is_leaf: Callable[[Any], bool] | None = None):
    """Flatten ``tree`` in insertion order.

    Returns
    -------
    paths : list of tuple
        The key path of each leaf.
    leaves : list
        The leaves, in flat order.
    treespec : optree.PyTreeSpec
        The structure, for :func:`optree.tree_unflatten`.
    """
    if type(tree) is np.ndarray:  # one array (SciPy's own case), always a leaf: no dict to order
        return [()], [tree], _LEAF_SPEC
    with optree.dict_insertion_ordered(True, namespace=NAMESPACE):
        paths, leaves, spec = optree.tree_flatten_with_path(
            tree, is_leaf=is_leaf, none_is_leaf=False, namespace=NAMESPACE
        )
    return paths, leaves, spec


#: A lone leaf's structure.
_LEAF_SPEC = optree.tree_structure(0, namespace=NAMESPACE)


def format_path(path: Sequence[Any], root: str = "x0") -> str:
    """Format a key path the way a user would index it: ``x0['layer'][0]``."""
    return root + "".join(f"[{key!r}]" for key in path)


def is_container(obj: Any) -> bool:
    """Whether optree treats ``obj`` as an internal node (dict, list, tuple, ...)."""
    return not optree.treespec_is_leaf(
        optree.tree_structure(obj, none_is_leaf=True, namespace=NAMESPACE)
    )


@dataclass(frozen=True)
class Layout:
    """Where each leaf of x0 lives in the flat float64 vector.

    Attributes
    ----------
    treespec : optree.PyTreeSpec
        x0's structure.
    paths : tuple of str
        Each leaf's key path, formatted for messages (``x0['w']``).
    shapes : tuple of tuple of int
        Each leaf's shape.
    dtypes : tuple
        Each leaf's dtype, as the backend's own dtype object.
    sizes, offsets : tuple of int
        Each leaf's element count and start in the flat vector.
    n : int
        Length of the flat vector.
    info : Any
        Whatever else the backend needs (the device, the transfer dtype).
    keys : tuple of tuple
        Each leaf's raw key path (optree's entries).
    """

    treespec: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    n: int
    info: Any = None
    keys: tuple = ()

    @classmethod
    def build(cls, treespec, paths, shapes, dtypes, info=None, keys=()) -> "Layout":
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        sizes = tuple(math.prod(s) for s in shapes)  # Python ints: no overflow, no NumPy call per leaf
        offsets = tuple(itertools.accumulate(sizes[:-1], initial=0)) if sizes else ()
        return cls(treespec, tuple(paths), shapes, tuple(dtypes), sizes, offsets, sum(sizes), info, tuple(keys))

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        """Rebuild x0's structure around ``leaves``."""
        if self.treespec == _LEAF_SPEC:  # x0 was one tensor: the leaf is the tree
            (leaf,) = leaves
            return leaf
        return optree.tree_unflatten(self.treespec, list(leaves))

    @cached_property
    def dict_keys(self) -> tuple | None:
        """x0's keys in flat order when x0 is a plain dict of tensors (given fast paths), else None."""
        spec = self.treespec
        if getattr(spec, "type", None) is not dict or spec.num_nodes != len(self.shapes) + 1:
            return None
        return tuple(spec.entries())

    @cached_property
    def shape_list(self) -> list[tuple[int, ...]]:
        """``shapes`` as a list, to compare with a list of leaf shapes in one step."""
        return list(self.shapes)

    @cached_property
    def _pieces(self) -> tuple[tuple[slice, tuple[int, ...] | None], ...]:
        # Each leaf's slice of the flat vector, and its shape where a view needs a reshape.
        return tuple((slice(o, o + s), None if shape == (s,) else shape)
                     for o, s, shape in zip(self.offsets, self.sizes, self.shapes))

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Views of ``flat`` (shape ``(..., n)``) reshaped to each leaf's shape."""
        if flat.ndim == 1:  # the hot path (every evaluation): one view per leaf, reshaped only if needed
            return [flat[sl] if shape is None else flat[sl].reshape(shape) for sl, shape in self._pieces]
        lead = flat.shape[:-1]
        return [
            flat[..., o : o + s].reshape(lead + shape)
            for o, s, shape in zip(self.offsets, self.sizes, self.shapes)
        ]

    def path_of_index(self, i: int) -> str:
        """The key path of the leaf holding flat index ``i``."""
        k = int(np.searchsorted(np.asarray(self.offsets), i, side="right")) - 1
        return self.paths[k]
