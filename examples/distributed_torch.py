"""Full-batch L-BFGS-B logistic regression with the data split across processes.

Launch (two processes on this machine, gloo)::

    torchrun --standalone --nproc_per_node=2 examples/distributed_torch.py

or ``python examples/distributed_torch.py`` for one process. Every process
generates the same data set (a stand-in for each process loading its own
files) and keeps its shard; every process calls ``minimize`` with the same
``x0`` and ``distributed=True``. The objective each process returns is its
shard's share of the global mean: the sum of its samples' losses divided by
the **global** sample count, plus the L2 term on rank 0 only, so that the
sum over processes is the one-process objective. Rank 0 prints the result;
every process holds the same ``res.x``.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from dict_minimize.torch_api import minimize


def make_data(n_samples: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A logistic-regression problem with noisy labels in {-1, 1}."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    w_true = rng.standard_normal(n_features) / np.sqrt(n_features)
    y = np.where(X @ w_true + 0.3 * rng.standard_normal(n_samples) > 0, 1.0, -1.0)
    return X, y


def make_loss(n_total: int, lam: float, rank: int):
    """This process's part of ``mean_i softplus(-y_i (x_i w + b)) + lam/2 |w|^2``."""

    def loss(params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        margins = y * (X @ params["w"] + params["b"])
        data_term = torch.nn.functional.softplus(-margins).sum() / n_total  # the GLOBAL count
        if rank == 0:  # a term without data: on one process only
            return data_term + 0.5 * lam * (params["w"] ** 2).sum()
        return data_term

    return loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200_000, help="total samples over every process")
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--lam", type=float, default=1e-3)
    parser.add_argument("--maxiter", type=int, default=500)
    opts = parser.parse_args(argv)

    launched = "WORLD_SIZE" in os.environ  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    if launched:
        dist.init_process_group("gloo", timeout=timedelta(seconds=120))
        rank, size = dist.get_rank(), dist.get_world_size()
    else:
        rank, size = 0, 1

    X, y = make_data(opts.samples, opts.features)
    mine = np.array_split(np.arange(opts.samples), size)[rank]
    X_local, y_local = torch.as_tensor(X[mine]), torch.as_tensor(y[mine])
    x0 = {"w": torch.zeros(opts.features, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    loss = make_loss(opts.samples, opts.lam, rank)

    start = time.perf_counter()
    res = minimize(loss, x0, args=(X_local, y_local), method="L-BFGS-B",
                   options={"maxiter": opts.maxiter}, distributed=True if launched else None)
    seconds = time.perf_counter() - start

    # Accuracy over every shard: the user's own all-reduce of two counts.
    with torch.no_grad():
        correct = ((X_local @ res.x["w"] + res.x["b"]) * y_local > 0).sum().double()
    counts = torch.stack([correct, torch.tensor(float(len(mine)), dtype=torch.float64)])
    if launched:
        dist.all_reduce(counts)
    accuracy = float(counts[0] / counts[1])

    summary = {"processes": size, "samples": opts.samples, "features": opts.features, "fun": res.fun,
               "nit": res.nit, "nfev": res.nfev, "success": bool(res.success), "accuracy": accuracy,
               "seconds": seconds, "seconds_per_evaluation": seconds / max(res.nfev, 1)}
    if "distributed" in res:
        summary["comm_share"] = res.distributed["comm_seconds"] / seconds
        summary["bytes_per_evaluation"] = 8 * (opts.features + 1 + 3)
    if rank == 0:
        print(", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if launched:
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
