"""DiffOpt.jl's custom-ReLU tutorial on scikit-learn's digits: a ReLU that is an optimization problem.

``relu(y) = argmin_x ||x||^2 - 2 y'x  subject to  x >= 0`` (DiffOpt.jl's
"Custom ReLU layer" tutorial, which trains it as a Flux layer on MNIST).
Here the layer is :func:`dict_minimize.torch_api.argmin`: one L-BFGS-B
solve over the whole minibatch's hidden activations (one bounded problem
of ``batch x hidden`` variables) in the forward pass, and in the backward
pass the implicit function theorem (conjugate gradients on the variables
off the bound; the active ones get zero derivative). The network
``64 -> 64 (argmin ReLU) -> 10`` is trained end to end with Adam beside the
same network with ``torch.relu``, from the same initial weights on the same
minibatches; both accuracies and loss curves are reported.

Run ``python examples/argmin_relu.py`` (about half a minute on one core);
``--plot PATH`` saves the loss curves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _data import load_digits_data
from dict_minimize.torch_api import argmin


def relu_objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DiffOpt's ReLU as a quadratic program: ``||x||^2 - 2 y'x``, minimized over ``x >= 0``.

    Examples
    --------
    >>> y = torch.tensor([1.0, -2.0], dtype=torch.float64)
    >>> float(relu_objective(torch.relu(y), y))  # the minimum, -||relu(y)||^2
    -1.0
    """
    return (x * x).sum() - 2 * (y * x).sum()


def argmin_relu(y: torch.Tensor) -> torch.Tensor:
    """``relu(y)`` computed by solving :func:`relu_objective` with bounds, differentiable in ``y``.

    Examples
    --------
    >>> y = torch.tensor([[1.5, -2.0], [0.5, -0.1]], dtype=torch.float64, requires_grad=True)
    >>> x = argmin_relu(y)
    >>> bool(torch.allclose(x, torch.relu(y)))
    True
    >>> x.sum().backward()
    >>> y.grad.tolist()
    [[1.0, 0.0], [1.0, 0.0]]
    """
    return argmin(relu_objective, torch.zeros_like(y.detach()), args=(y,), bounds=(0.0, None),
                  method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 100})


class Net(torch.nn.Module):
    """``Linear(64, hidden) -> activation -> Linear(hidden, 10)``."""

    def __init__(self, activation, hidden: int = 64):
        super().__init__()
        self.inner = torch.nn.Linear(64, hidden)
        self.outer = torch.nn.Linear(hidden, 10)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.activation(self.inner(x)))


def split_digits(n_test: int = 500, seed: int = 0):
    """The 1797 digits as float64 tensors, ``n_test`` held out at random."""
    data = load_digits_data("float64")
    order = np.random.default_rng(seed).permutation(len(data.y_train))
    test, train = order[:n_test], order[n_test:]
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    return x[train], y[train], x[test], y[test]


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def train(model, x, y, epochs: int, batch_size: int, seed: int, lr: float = 1e-2) -> list[float]:
    """Adam on cross-entropy; the mean training loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curve.append(total / len(y))
    return curve


def main(epochs: int = 15, batch_size: int = 64, hidden: int = 64, seed: int = 0, plot: str | None = None,
         verbose: bool = True) -> dict:
    """Train both networks.

    Returns ``{name: {"accuracy", "train_accuracy", "loss", "seconds"}}`` for
    ``'argmin ReLU'`` and ``'torch.relu'``, and ``"max_loss_difference"``
    between their loss curves.
    """
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = split_digits(seed=seed)
    out = {}
    for name, activation in (("argmin ReLU", argmin_relu), ("torch.relu", torch.relu)):
        torch.manual_seed(seed)  # the same initial weights for both
        model = Net(activation, hidden).double()
        start = time.perf_counter()
        curve = train(model, x_train, y_train, epochs, batch_size, seed)
        seconds = time.perf_counter() - start
        out[name] = {"accuracy": accuracy(model, x_test, y_test),
                     "train_accuracy": accuracy(model, x_train, y_train), "loss": curve, "seconds": seconds}
        if verbose:
            print(f"{name:12s} test accuracy {out[name]['accuracy']:.3f}  train accuracy "
                  f"{out[name]['train_accuracy']:.3f}  final loss {curve[-1]:.4f}  {seconds:.1f} s")
    gap = float(np.max(np.abs(np.subtract(*[row["loss"] for row in out.values()]))))
    out["max_loss_difference"] = gap
    if verbose:
        print(f"largest difference between the two loss curves: {gap:.2e}")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3), dpi=100)
        for name, row in out.items():
            if not isinstance(row, dict):
                continue
            ax.plot(range(1, epochs + 1), row["loss"], label=f"{name} ({row['accuracy']:.3f} test acc.)",
                    ls="-" if name.startswith("argmin") else "--")
        ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="digits: argmin ReLU vs torch.relu")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot)
        plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save the loss curves (PNG) here")
    a = parser.parse_args()
    main(a.epochs, a.batch_size, a.hidden, a.seed, a.plot)
