"""Problems shared by the distributed tests' workers and the one-process references.

Plain NumPy so that the parent test process and every worker build the same
data. The objective is a sum over samples divided by the global count (a
mean), plus a regularizer added on rank 0 only: the sum over ranks is the
one-process objective on the concatenated data.
"""

from __future__ import annotations

import numpy as np

N_SAMPLES, N_FEATURES, LAM = 240, 6, 0.1


def data() -> tuple[np.ndarray, np.ndarray]:
    """A fixed logistic-regression data set, labels in {-1, 1}."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES))
    w_true = rng.standard_normal(N_FEATURES)
    y = np.where(X @ w_true + 0.5 * rng.standard_normal(N_SAMPLES) > 0, 1.0, -1.0)
    return X, y


def shard(rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous slice of :func:`data` (sizes may differ by one)."""
    X, y = data()
    parts = np.array_split(np.arange(N_SAMPLES), size)
    return X[parts[rank]], y[parts[rank]]


def x0() -> dict[str, np.ndarray]:
    return {"w": np.zeros(N_FEATURES), "b": np.zeros(())}
