"""NumPy backend: a drop-in for :func:`scipy.optimize.minimize` that also takes pytrees.

With a plain array ``x0`` and SciPy's arguments it gives exactly SciPy's
result. NumPy has no autodiff, so ``jac=None`` means SciPy's finite
differences, as in SciPy.
"""

from __future__ import annotations

import numbers

from typing import Any

import numpy as np

from .core import Backend, Layout, bind, bind_least_squares, bind_root
from .core.tree import flatten_with_paths, is_container

__all__ = ["minimize", "least_squares", "root"]


class NumpyBackend(Backend):
    """Leaves are NumPy arrays (and Python floats); the flat vector is theirs."""

    scipy_dropin = True

    def prepare_x0(self, x0: Any) -> Any:
        if type(x0) is np.ndarray and x0.ndim and x0.dtype.kind == "f":
            return x0  # SciPy's own case, as the lines below would leave it
        # Drop-in: what NumPy reads as one numeric array is one leaf, as in SciPy.
        if isinstance(x0, (list, tuple)) and not hasattr(x0, "_fields"):
            _, leaves, _ = flatten_with_paths(x0)
            if leaves and all(isinstance(v, (numbers.Number, np.generic)) for v in leaves):
                x0 = np.asarray(x0)
        if is_container(x0):
            return x0
        arr = np.atleast_1d(np.asarray(x0))
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.float64)
        return arr

    def leaf_shape_dtype(self, leaf: Any, path: str):
        if isinstance(leaf, float):
            return (), np.dtype(np.float64)
        if not isinstance(leaf, (np.ndarray, np.generic)):
            raise TypeError(
                f"{path} is a {type(leaf).__name__}; x0's leaves must be floating NumPy arrays or floats"
            )
        if leaf.dtype.kind != "f":
            raise TypeError(
                f"{path} has dtype {leaf.dtype}; only floating dtypes (float16, float32, float64) "
                "can be optimized"
            )
        return leaf.shape, leaf.dtype

    def layout_info(self, leaves, dtypes):
        return dtypes[0] if all(d == dtypes[0] for d in dtypes) else None

    def to_flat(self, leaves: list, layout: Layout) -> np.ndarray:
        if len(leaves) == 1:
            flat = np.array(leaves[0], copy=True).reshape(-1)
        else:
            flat = np.concatenate(leaves, axis=None)  # a new array
        if flat.dtype == np.float64:  # the hot path: no promotion to work out
            return flat
        # float64, or complex128 under SciPy's complex-step differences ('cs').
        return flat.astype(np.result_type(flat.dtype, np.float64), copy=False)

    def from_flat(self, x: np.ndarray, layout: Layout, requires_grad: bool = False) -> list:
        if x.dtype.kind == "c":  # SciPy's complex-step differences ('cs'): keep the imaginary part
            pieces = zip(layout.split(x), layout.dtypes)
            return [piece.astype(np.result_type(dt, x.dtype)) for piece, dt in pieces]
        if layout.info is not None:  # one dtype: one copy, then views
            buf = np.array(x, dtype=layout.info, copy=True)
            return [buf.reshape(layout.shapes[0])] if len(layout.shapes) == 1 else layout.split(buf)
        return [piece.astype(dt) for piece, dt in zip(layout.split(x), layout.dtypes)]

    def to_numpy(self, obj: Any) -> np.ndarray:
        return np.asarray(obj)


_BACKEND = NumpyBackend()


minimize = bind(
    _BACKEND,
    __name__,
    tensors="NumPy arrays",
    tensor="array",
    jac_none="``None``: SciPy's finite differences, as in SciPy.",
    hess_none="As in SciPy (finite differences where the method needs them).",
    cons_none="Without ``jac``, SciPy's finite differences.",
    example="""    >>> import numpy as np
    >>> from dict_minimize.numpy_api import minimize
    >>> def rosen(x):
    ...     a, b = x["a"], x["b"]
    ...     return 100 * (b - a**2) ** 2 + (1 - a) ** 2
    >>> res = minimize(rosen, {"a": np.array(-1.0), "b": np.array(2.0)},
    ...                method="L-BFGS-B", bounds={"b": (None, 5.0)})
    >>> round(float(res.x["a"]), 3), round(float(res.x["b"]), 3)
    (1.0, 1.0)""",
)

least_squares = bind_least_squares(
    _BACKEND,
    __name__,
    jac_default="2-point",
    tensors="NumPy arrays",
    tensor="array",
    jac_none="``'2-point'`` (the default): SciPy's finite differences, as in SciPy; ``None`` means the same.",
    example="""    >>> import numpy as np
    >>> from dict_minimize.numpy_api import least_squares
    >>> t = np.linspace(0.0, 1.0, 20)
    >>> y = 2.0 * np.exp(-1.5 * t)
    >>> def residuals(p):
    ...     return p["a"] * np.exp(-p["k"] * t) - y
    >>> res = least_squares(residuals, {"a": np.array(1.0), "k": np.array(1.0)})
    >>> round(float(res.x["a"]), 4), round(float(res.x["k"]), 4), res.jac.shape
    (2.0, 1.5, (20, 2))""",
)

root = bind_root(
    _BACKEND,
    __name__,
    tensors="NumPy arrays",
    tensor="array",
    jac_none="``None``: SciPy's finite differences, as in SciPy.",
    example="""    >>> import numpy as np
    >>> from dict_minimize.numpy_api import root
    >>> def equations(x):
    ...     return {"cube": x["a"] ** 3 - 8.0, "equal": x["b"] - x["a"]}
    >>> res = root(equations, {"a": np.array(1.0), "b": np.array(0.0)})
    >>> round(float(res.x["a"]), 4), round(float(res.x["b"]), 4)
    (2.0, 2.0)""",
)
