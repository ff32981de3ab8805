"""Plots of optimization runs and loss landscapes, for any backend.

- :func:`plot_history`: the ``history`` of one or several results
  (objective, gradient norm) against iterations, time or evaluations;
- :func:`loss_landscape`: an objective evaluated on a 1-D or 2-D grid of
  random directions around a point (Li et al., 2018, "Visualizing the Loss
  Landscape of Neural Nets"), for any backend's objective and any pytree;
- :func:`plot_landscape`: that grid as a contour or a line, optionally with an
  optimization path projected onto it.

matplotlib is an optional dependency (``pip install "dict_minimize[plot]"``)
imported when a plot is drawn; :func:`loss_landscape` needs only the
objective's own framework, imported when ``x``'s leaves come from it. Figures
are made with matplotlib's object API (:class:`matplotlib.figure.Figure`),
never through pyplot's global state: pass ``ax=`` to draw into a figure of
your own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .core.backend import Backend
from .core.tree import Layout, flatten_with_paths

__all__ = [
    "HistoryPlot", "Landscape", "LandscapePlot", "backend_for", "loss_landscape", "plot_history",
    "plot_landscape",
]

#: ``x=`` of :func:`plot_history` -> the history key that holds it.
X_KEYS = {"iteration": "nit", "time": "time", "nfev": "nfev"}
X_LABELS = {"iteration": "iteration", "time": "time (s)", "nfev": "objective evaluations"}
Y_LABELS = {"fun": "objective", "grad_norm": "gradient norm"}
#: Top-level module of a leaf's type -> the dict_minimize backend module for it.
BACKEND_MODULES = {
    "numpy": "numpy_api", "builtins": "numpy_api", "torch": "torch_api",
    "tensorflow": "tensorflow_api", "keras": "tensorflow_api", "jax": "jax_api", "jaxlib": "jax_api",
}
NORMALIZATIONS = ("filter", "global", None)
#: Grids with at least this many points show a progress bar unless ``progress=False``.
PROGRESS_MIN_POINTS = 200


# ---- history ----------------------------------------------------------------


class HistoryPlot(NamedTuple):
    """What :func:`plot_history` drew.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    axes : tuple of matplotlib.axes.Axes
        One per entry of ``y``.
    lines : tuple of tuple of matplotlib.lines.Line2D
        ``lines[i][j]``: quantity ``y[i]`` of result ``j``.
    epoch_lines : tuple of matplotlib.lines.Line2D
        The vertical lines marking epoch boundaries of stochastic runs.
    """

    figure: Any
    axes: tuple
    lines: tuple
    epoch_lines: tuple


def _as_results(results: Any) -> list:
    if hasattr(results, "history") or isinstance(results, Mapping):
        results = [results]
    results = list(results)
    if not results:
        raise ValueError("results is empty: give one or more OptimizeResults with a history")
    for i, res in enumerate(results):
        history = getattr(res, "history", None)
        if not isinstance(history, Mapping):
            raise TypeError(f"results[{i}] has no history mapping (minimize records one unless history=False; "
                            "for a flat ndarray x0 in numpy_api, as from SciPy, pass history=True)")
    return results


def _axes_for(ax: Any, count: int) -> tuple[Any, tuple]:
    if ax is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.2 * count, 3.2), layout="constrained")
        return figure, tuple(np.atleast_1d(figure.subplots(1, count, squeeze=False)).ravel())
    axes = (ax,) if not isinstance(ax, (Sequence, np.ndarray)) else tuple(np.ravel(ax))
    if len(axes) != count:
        raise ValueError(f"ax has {len(axes)} axes; y asks for {count}")
    return axes[0].figure, axes


def _epoch_starts(history: Mapping, xs: np.ndarray) -> np.ndarray:
    """x coordinates of the first iteration of every epoch after the first."""
    epochs = np.asarray(history.get("epoch", ()))
    if epochs.shape != xs.shape or epochs.size < 2:
        return np.empty(0)
    return xs[1:][np.diff(epochs) > 0]


def plot_history(
    results: Any,
    x: str = "iteration",
    y: str | Sequence[str] = ("fun", "grad_norm"),
    labels: Sequence[str] | None = None,
    ax: Any = None,
    logy: bool = True,
) -> HistoryPlot:
    """Plot the ``history`` of one or several results, overlaid (methods, frameworks).

    Parameters
    ----------
    results : OptimizeResult or sequence of OptimizeResult
        Results with a ``history`` mapping of equal-length arrays, as
        ``minimize`` returns them (any object with such a ``history``
        attribute works, e.g. one you fill for a torch.optim loop).
    x : {'iteration', 'time', 'nfev'}
        The horizontal axis: ``history['nit']``, ``history['time']``
        (seconds since the start) or ``history['nfev']`` (objective evaluations).
    y : str or sequence of str
        History keys to plot, one axes each (``'fun'``, ``'grad_norm'``, ...).
    labels : sequence of str, optional
        One legend entry per result; without it, several results are
        labelled ``'result 0'``, ``'result 1'``, ... and one result has no legend.
    ax : matplotlib.axes.Axes or sequence of Axes, optional
        Where to draw, one per entry of ``y``; by default a new
        :class:`~matplotlib.figure.Figure` (not registered with pyplot).
    logy : bool
        Log-scaled vertical axes; an axis whose data has values ``<= 0``
        gets a symmetric log scale instead.

    Returns
    -------
    HistoryPlot
        ``(figure, axes, lines, epoch_lines)``. Stochastic runs (whose
        ``history['epoch']`` changes) get a dotted vertical line, in the
        run's colour, at the first iteration of every new epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from dict_minimize.numpy_api import minimize
    >>> from dict_minimize.plot import plot_history
    >>> fun = lambda x: float(np.sum((x["w"] - 1.0) ** 2))
    >>> runs = [minimize(fun, {"w": np.zeros(3)}, method=m) for m in ("L-BFGS-B", "CG")]
    >>> drawn = plot_history(runs, labels=["L-BFGS-B", "CG"])
    >>> [ax.get_ylabel() for ax in drawn.axes]
    ['objective', 'gradient norm']
    >>> drawn.figure.savefig("history.png")  # doctest: +SKIP
    """
    if x not in X_KEYS:
        raise ValueError(f"x must be one of {tuple(X_KEYS)}, got {x!r}")
    keys = [y] if isinstance(y, str) else list(y)
    if not keys:
        raise ValueError("y is empty: name at least one history key")
    results = _as_results(results)
    if labels is not None and len(labels) != len(results):
        raise ValueError(f"labels has {len(labels)} entries for {len(results)} results")
    for i, res in enumerate(results):
        for key in [X_KEYS[x], *keys]:
            if key not in res.history:
                raise ValueError(f"results[{i}].history has no {key!r} (it has {sorted(res.history)})")
    figure, axes = _axes_for(ax, len(keys))
    lines, epoch_lines = [], []
    for key, axis in zip(keys, axes):
        row = []
        for i, res in enumerate(results):
            xs = np.asarray(res.history[X_KEYS[x]], dtype=float)
            label = labels[i] if labels is not None else (f"result {i}" if len(results) > 1 else None)
            (line,) = axis.plot(xs, np.asarray(res.history[key], dtype=float), label=label)
            row.append(line)
            for start in _epoch_starts(res.history, xs):
                epoch_lines.append(axis.axvline(start, color=line.get_color(), linestyle=":",
                                                linewidth=0.8, alpha=0.6))
        lines.append(tuple(row))
        _scale_y(axis, [np.asarray(r.history[key], dtype=float) for r in results], logy)
        axis.set_xlabel(X_LABELS[x])
        axis.set_ylabel(Y_LABELS.get(key, key))
        if any(line.get_label() and not line.get_label().startswith("_") for line in row):
            axis.legend()
    return HistoryPlot(figure, tuple(axes), tuple(lines), tuple(epoch_lines))


def _scale_y(axis: Any, columns: list, logy: bool) -> None:
    if not logy:
        return
    finite = np.concatenate([c[np.isfinite(c)] for c in columns])
    if finite.size and finite.min() <= 0:
        axis.set_yscale("symlog", linthresh=max(float(np.abs(finite[finite != 0]).min(initial=1.0)), 1e-12))
    else:
        axis.set_yscale("log")


# ---- landscape --------------------------------------------------------------


@dataclass
class Landscape:
    """An objective on a grid around a point: ``fun(x + a d1 + b d2)``.

    Attributes
    ----------
    alphas : np.ndarray
        ``(points,)`` coordinates along the first direction.
    betas : np.ndarray or None
        ``(points,)`` coordinates along the second direction (None for one).
    values : np.ndarray
        ``values[i, j] = fun(x + alphas[i] * d1 + betas[j] * d2)``, or
        ``values[i] = fun(x + alphas[i] * d1)`` for one direction.
    directions : list
        ``d1`` (and ``d2``), pytrees like ``x``.
    center : float
        ``fun(x)``.
    """

    alphas: np.ndarray
    betas: np.ndarray | None
    values: np.ndarray
    directions: list
    center: float
    backend: Backend = field(repr=False)
    layout: Layout = field(repr=False)
    x_flat: np.ndarray = field(repr=False)
    direction_matrix: np.ndarray = field(repr=False)  # (n, k): the flat directions as columns

    def project(self, path: Sequence[Any]) -> np.ndarray:
        """Coordinates ``(len(path), k)`` of pytrees like ``x`` on the directions.

        The least-squares solution ``c`` of ``D c = p - x`` for each point
        ``p`` (``D``: the directions as columns): the closest point of the
        plane (or line) through ``x``.

        Examples
        --------
        >>> import numpy as np
        >>> from dict_minimize.plot import loss_landscape
        >>> grid = loss_landscape(lambda t: float(np.sum(t["w"] ** 2)), {"w": np.ones((2, 2))}, points=3)
        >>> p = {"w": np.ones((2, 2)) + 0.5 * grid.directions[0]["w"]}
        >>> np.round(grid.project([p]), 6).tolist() == [[0.5, 0.0]]
        True
        """
        if not len(path):
            return np.empty((0, self.direction_matrix.shape[1]))
        flats = [self.backend.to_flat(_leaves(self.backend, p, self.layout, f"path[{i}]"), self.layout)
                 for i, p in enumerate(path)]
        coords, *_ = np.linalg.lstsq(self.direction_matrix, (np.stack(flats) - self.x_flat).T, rcond=None)
        return coords.T


def backend_for(tree: Any) -> Backend:
    """The dict_minimize backend for ``tree``'s leaves, importing only that framework.

    The first leaf whose type comes from torch, TensorFlow/Keras or JAX
    decides; NumPy arrays and Python floats alone mean the NumPy backend.

    Examples
    --------
    >>> import numpy as np
    >>> type(backend_for({"w": np.zeros(2)})).__name__
    'NumpyBackend'
    """
    _, leaves, _ = flatten_with_paths(tree)
    module = "numpy_api"
    for leaf in leaves:
        root = type(leaf).__module__.split(".", 1)[0]
        if BACKEND_MODULES.get(root, "numpy_api") != "numpy_api":
            module = BACKEND_MODULES[root]
            break
    return importlib.import_module(f"{__package__}.{module}")._BACKEND


def _leaves(backend: Backend, tree: Any, layout: Layout, what: str) -> list:
    """``tree``'s leaves, checked against x's structure and shapes."""
    _, leaves, spec = flatten_with_paths(backend.prepare_x0(tree), backend.is_leaf)
    if spec != layout.treespec:
        raise ValueError(f"{what} does not have x's structure")
    for leaf, shape, path in zip(leaves, layout.shapes, layout.paths):
        if tuple(getattr(leaf, "shape", np.shape(leaf))) != shape:
            raise ValueError(f"{what}{path[2:]} has shape {tuple(np.shape(leaf))}; x there has shape {shape}")
    return leaves


def _normalize(d: np.ndarray, x: np.ndarray, layout: Layout, normalization: str | None, biases: str,
               filter_axis: int) -> np.ndarray:
    """One flat direction scaled as Li et al. (2018) do ('filter') or to ``||x||`` ('global')."""
    if normalization is None:
        return d
    if normalization == "global":
        norm = np.linalg.norm(d)
        return d * (np.linalg.norm(x) / norm) if norm > 0 else d
    out = np.zeros_like(d)
    for dp, xp, op, shape in zip(layout.split(d), layout.split(x), layout.split(out), layout.shapes):
        if len(shape) >= 2:
            # Each filter (slice along filter_axis) gets the norm of the parameter's filter.
            dv, xv, ov = (np.moveaxis(a, filter_axis, 0) for a in (dp, xp, op))
            dn = np.linalg.norm(dv.reshape(dv.shape[0], -1), axis=1)
            xn = np.linalg.norm(xv.reshape(xv.shape[0], -1), axis=1)
            scale = np.divide(xn, dn, out=np.zeros_like(xn), where=dn > 0)
            ov[...] = dv * scale.reshape((-1,) + (1,) * (len(shape) - 1))
        elif biases == "scale":
            # A bias vector as one whole (never element by element, which
            # would make every entry a "filter" of norm |b_i|).
            dn = np.linalg.norm(dp)
            op[...] = dp * (np.linalg.norm(xp) / dn) if dn > 0 else 0.0
    return out


def _directions(directions: Any, backend: Backend, layout: Layout, x: np.ndarray, seed: Any) -> list:
    if isinstance(directions, (int, np.integer)) and not isinstance(directions, bool):
        if directions not in (1, 2):
            raise ValueError(
                f"directions must be 1 or 2 (or a list of 1 or 2 pytrees like x), got {directions}"
            )
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(layout.n) for _ in range(int(directions))]
    given = list(directions) if isinstance(directions, (list, tuple)) else None
    if not given or len(given) > 2:
        raise ValueError("directions must be 1 or 2, or a list of 1 or 2 pytrees like x")
    return [backend.to_flat(_leaves(backend, d, layout, f"directions[{i}]"), layout)
            for i, d in enumerate(given)]


def loss_landscape(
    fun: Callable[..., Any],
    x: Any,
    args: tuple = (),
    directions: int | Sequence[Any] = 2,
    span: float = 1.0,
    points: int = 25,
    normalization: str | None = "filter",
    seed: Any = 0,
    *,
    biases: str = "zero",
    filter_axis: int = 0,
    progress: bool | None = None,
) -> Landscape:
    """Evaluate ``fun`` on a grid of random directions around ``x`` (Li et al., 2018).

    Works for any backend's objective: ``x``'s leaves (NumPy, torch,
    TensorFlow or JAX tensors) pick the backend, whose compiled value
    function (``jax.jit``, ``tf.function``) is built once and reused at every
    grid point.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args)`` -> a scalar, as for ``minimize``.
    x : pytree
        The centre, e.g. ``res.x``; any pytree of floating tensors.
    args : tuple
        Extra arguments of ``fun``.
    directions : int or list of pytree
        1 (a line) or 2 (a plane) random directions, each drawn with
        independent standard normal entries (Gaussian, as Li et al.; not
        uniform), or a list of 1 or 2 directions of your own, pytrees like
        ``x`` (e.g. from the initial point to the solution).
    span : float
        The grid runs from ``-span`` to ``span`` along each direction.
    points : int
        Grid points per direction (at least 2). Odd: ``x`` itself is the centre point.
    normalization : {'filter', 'global', None}
        How each direction is scaled to ``x``:
        ``'filter'`` (Li et al.): for leaves of 2 or more dimensions, each
        filter (slice along ``filter_axis``: an output row of a PyTorch
        weight matrix, an output channel of a PyTorch kernel) gets the norm
        of that filter of ``x``;
        leaves of 0 or 1 dimension (biases, scalars) follow ``biases``.
        ``'global'``: the whole direction scaled to ``||x||`` (FluxOptTools).
        ``None``: as drawn (or given).
    seed : int or numpy.random.Generator seed
        Seeds :func:`numpy.random.default_rng`: the same seed gives the same
        directions and grid, whatever the backend.
    biases : {'zero', 'scale'}
        With ``'filter'``: 0- and 1-d leaves get a zero direction (Li et
        al.'s default, the plot shows the weights' landscape) or ``'scale'``:
        the leaf's direction as one vector scaled to the leaf's norm (never
        element by element, as if each bias entry were a filter).
    filter_axis : int
        The axis that indexes filters: 0 for PyTorch's ``(out, in, ...)``
        weights, -1 for the ``(in, out)`` matrices and ``(..., in, out)``
        kernels of Keras, Flax and most JAX code.
    progress : bool, optional
        A tqdm progress bar; by default shown for grids of at least
        :data:`PROGRESS_MIN_POINTS` points.

    Returns
    -------
    Landscape
        ``.alphas``, ``.betas``, ``.values`` (``points x points``, or
        ``points`` for one direction), ``.directions`` (pytrees like ``x``),
        ``.center`` (``fun(x)``) and ``.project(path)``.

    Raises
    ------
    ValueError
        For a bad ``directions``, ``points``, ``span`` or ``normalization``,
        or a direction that normalization makes zero (``'filter'`` on a
        pytree of scalars and vectors: use ``'global'`` or ``biases='scale'``).

    Examples
    --------
    >>> import numpy as np
    >>> from dict_minimize.plot import loss_landscape
    >>> def fun(p):
    ...     return float(np.sum((p["w"] - 1.0) ** 2) + np.sum(p["b"] ** 2))
    >>> x = {"w": np.ones((3, 2)), "b": np.zeros(3)}
    >>> grid = loss_landscape(fun, x, points=5, span=0.5)
    >>> grid.values.shape, float(grid.alphas[2]), bool(grid.values[2, 2] == fun(x))
    ((5, 5), 0.0, True)
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if biases not in ("zero", "scale"):
        raise ValueError(f"biases must be 'zero' or 'scale', got {biases!r}")
    if not isinstance(points, (int, np.integer)) or isinstance(points, bool) or points < 2:
        raise ValueError(f"points must be an int >= 2, got {points!r}")
    if not (isinstance(span, (int, float, np.floating)) and np.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive number, got {span!r}")
    if not isinstance(filter_axis, (int, np.integer)) or isinstance(filter_axis, bool):
        raise TypeError(f"filter_axis must be an int, got {filter_axis!r}")
    if not isinstance(args, tuple):
        args = (args,)
    from .core.driver import EagerValue, build_layout

    backend = backend_for(x)
    layout, leaves = build_layout(backend, backend.prepare_x0(x))
    x_flat = backend.to_flat(leaves, layout)
    flat_dirs = [_normalize(d, x_flat, layout, normalization, biases, filter_axis)
                 for d in _directions(directions, backend, layout, x_flat, seed)]
    for i, d in enumerate(flat_dirs):
        if not np.any(d):
            raise ValueError(
                f"direction {i} is zero after normalization={normalization!r}"
                + (" (x has no leaf of 2 or more dimensions: use normalization='global' or biases='scale')"
                   if normalization == "filter" else "")
            )
    value = backend.value(fun, layout) or EagerValue(backend, layout, fun)
    coords = span * (np.arange(points) - (points - 1) / 2) / ((points - 1) / 2)
    shape = (points,) * len(flat_dirs)
    values = np.empty(shape)
    bar = _progress_bar(progress, values.size)
    try:
        for index in np.ndindex(*shape):
            offset = sum(coords[k] * d for k, d in zip(index, flat_dirs))
            values[index] = value(x_flat + offset, args)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return Landscape(
        alphas=coords.copy(),
        betas=coords.copy() if len(flat_dirs) == 2 else None,
        values=values,
        directions=[layout.unflatten(backend.from_flat(d, layout)) for d in flat_dirs],
        center=float(value(x_flat, args)),
        backend=backend,
        layout=layout,
        x_flat=x_flat,
        direction_matrix=np.stack(flat_dirs, axis=1),
    )


def _progress_bar(progress: bool | None, total: int):
    if progress is False or (progress is None and total < PROGRESS_MIN_POINTS):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pt", desc="loss landscape", leave=False)


def _log_values(z: np.ndarray) -> tuple[np.ndarray, str]:
    """log10 of the values, shifted first when some are <= 0 (by a thousandth of their range)."""
    low, high = np.nanmin(z), np.nanmax(z)
    if low > 0:
        return np.log10(z), "log10(objective)"
    shift = (high - low) * 1e-3 or 1.0
    return np.log10(z - low + shift), f"log10(objective - min + {shift:.3g})"


class LandscapePlot(NamedTuple):
    """What :func:`plot_landscape` drew.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    ax : matplotlib.axes.Axes
    surface : matplotlib artist
        The filled contour set (two directions) or the line (one).
    path : matplotlib.lines.Line2D or None
        The projected optimization path, if one was given.
    """

    figure: Any
    ax: Any
    surface: Any
    path: Any


def plot_landscape(grid: Landscape, path: Sequence[Any] | None = None, ax: Any = None,
                   levels: int = 20, logz: bool = False) -> LandscapePlot:
    """Draw a :class:`Landscape`: filled contours (2 directions) or a line (1).

    Parameters
    ----------
    grid : Landscape
        From :func:`loss_landscape`.
    path : sequence of pytree, optional
        Points like ``x`` (e.g. the iterates a ``callback`` collected),
        projected onto the directions by least squares
        (:meth:`Landscape.project`) and drawn over the landscape; with one
        direction, as ticks along the horizontal axis.
    ax : matplotlib.axes.Axes, optional
        Where to draw; by default a new :class:`~matplotlib.figure.Figure`.
    levels : int
        Contour levels (two directions).
    logz : bool
        Contour ``log10(values)`` (of ``values - min`` plus a thousandth of
        their range when some are ``<= 0``), or a log vertical axis for one
        direction: loss surfaces often span orders of magnitude.

    Returns
    -------
    LandscapePlot
        ``(figure, ax, surface, path)``.

    Examples
    --------
    >>> import numpy as np
    >>> from dict_minimize.plot import loss_landscape, plot_landscape
    >>> fun = lambda p: float(np.sum(p["w"] ** 2))
    >>> grid = loss_landscape(fun, {"w": np.ones((2, 3))}, points=9)
    >>> drawn = plot_landscape(grid, path=[{"w": np.full((2, 3), 1.2)}, {"w": np.ones((2, 3))}])
    >>> drawn.path.get_xydata().shape
    (2, 2)
    """
    if ax is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(5, 4), layout="constrained")
        ax = figure.add_subplot()
    figure = ax.figure
    coords = grid.project(path) if path is not None else None
    path_line = None
    ax.set_xlabel("direction 1 (α)")
    if grid.betas is None:
        (surface,) = ax.plot(grid.alphas, grid.values)
        ax.set_ylabel("objective")
        if logz:
            ax.set_yscale("log")
        if coords is not None:
            (path_line,) = ax.plot(coords[:, 0], np.zeros(len(coords)), "|", color="C3", markersize=12,
                                   transform=ax.get_xaxis_transform(), label="path")
        return LandscapePlot(figure, ax, surface, path_line)
    z, label = grid.values.T, "objective"  # rows: betas (vertical), columns: alphas (horizontal)
    if logz:
        z, label = _log_values(z)
    surface = ax.contourf(grid.alphas, grid.betas, z, levels=levels, cmap="viridis")
    ax.contour(grid.alphas, grid.betas, z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    figure.colorbar(surface, ax=ax, label=label)
    ax.plot([0.0], [0.0], marker="*", color="w", markeredgecolor="k", markersize=12, linestyle="")
    ax.set_ylabel("direction 2 (β)")
    if coords is not None:
        (path_line,) = ax.plot(coords[:, 0], coords[:, 1], ".-", color="C3", linewidth=1, markersize=3,
                               label="path")
    return LandscapePlot(figure, ax, surface, path_line)
