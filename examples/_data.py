"""Data sets shared by the training examples: MNIST-1D and scikit-learn's digits.

Both are built locally; nothing is downloaded. Arrays are NumPy so that
every framework's example starts from the same numbers.

- :func:`load_mnist1d`: MNIST-1D (Greydanus, 2020) generated with
  ``mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())`` (seed 42):
  5000 signals of length 40, 10 classes, the package's 4000/1000 train/test
  split. ``make_dataset`` already centres the signals and scales them to unit
  standard deviation (one mean and one scale over the whole set), which is how
  the MNIST-1D paper trains on them; nothing else is done here.
- :func:`load_digits_data`: scikit-learn's 8x8 digits (1797 images, 64
  features, values 0..16), scaled to [0, 1].

Usage from an example next to this file::

    from _data import load_mnist1d
    data = load_mnist1d(n_train=1000)
    data.x_train.shape   # (1000, 40)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "load_digits_data", "load_mnist1d"]


class Dataset(NamedTuple):
    """Train and test arrays.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        Features, ``(n, d)``, in the requested float dtype.
    y_train, y_test : np.ndarray
        Integer class labels, ``(n,)``, int64.
    n_classes : int
        Number of classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


@functools.lru_cache(maxsize=1)
def _mnist1d_full() -> dict:
    # Generating takes about a second; examples and tests ask for it often.
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset builds the set from the package's templates and seed:
    # never get_dataset, which downloads a pickle.
    data = make_dataset(get_dataset_args())
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


def _check_count(name: str, value: int | None, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not 1 <= value <= available:
        raise ValueError(f"{name} must be between 1 and {available}, got {value}")
    return int(value)


def load_mnist1d(n_train: int | None = None, n_test: int | None = None, dtype: str = "float32") -> Dataset:
    """MNIST-1D, generated locally: the default 4000/1000 split.

    Parameters
    ----------
    n_train : int, optional
        Keep the first ``n_train`` of the 4000 training signals (all by default).
    n_test : int, optional
        Keep the first ``n_test`` of the 1000 test signals (all by default).
    dtype : str
        Floating dtype of the features, ``'float32'`` or ``'float64'``.

    Returns
    -------
    Dataset
        ``x_*`` of shape ``(n, 40)``, ``y_*`` int64 labels in 0..9.

    Examples
    --------
    >>> data = load_mnist1d(n_train=100, n_test=50)
    >>> data.x_train.shape, data.x_test.shape, data.n_classes
    ((100, 40), (50, 40), 10)
    """
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}")
    full = _mnist1d_full()
    n_train = _check_count("n_train", n_train, len(full["y"]))
    n_test = _check_count("n_test", n_test, len(full["y_test"]))
    return Dataset(
        x_train=full["x"][:n_train].astype(dtype),
        y_train=full["y"][:n_train].astype(np.int64),
        x_test=full["x_test"][:n_test].astype(dtype),
        y_test=full["y_test"][:n_test].astype(np.int64),
        n_classes=10,
    )


def load_digits_data(dtype: str = "float64") -> Dataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1]; all 1797 images, as train and test.

    The digits example fits one convex objective and compares optimizers on
    it, so there is no held-out split: ``x_test``/``y_test`` are the training
    arrays.

    Parameters
    ----------
    dtype : str
        Floating dtype of the features.

    Returns
    -------
    Dataset
        ``x_train`` of shape ``(1797, 64)``, labels in 0..9.

    Examples
    --------
    >>> data = load_digits_data()
    >>> data.x_train.shape, float(data.x_train.max())
    ((1797, 64), 1.0)
    """
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}")
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(dtype)
    y = y.astype(np.int64)
    return Dataset(x_train=x, y_train=y, x_test=x, y_test=y, n_classes=10)
