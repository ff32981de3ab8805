"""Regenerate the documentation gallery's training pictures into ``docs/gallery/``.

Run ``python docs/make_gallery_plots.py`` (about a minute on one CPU core).
Everything is at reduced size so that it is quick: the MNIST-1D MLP of
``examples/mnist1d_torch.py`` (40-100-100-10, GELU) on the first
``N_TRAIN`` training signals, ``MAXITER`` L-BFGS-B iterations.

Pictures (each a small PNG):

- ``mnist1d_history.png``: full-batch L-BFGS-B (``torch_api.minimize``)
  against Adam (lr 1e-2, minibatches of 100, the MNIST-1D repository's
  settings) for as many gradient evaluations as L-BFGS-B made; Adam's
  full-batch objective and gradient norm are recorded every ``RECORD_EVERY``
  steps (those evaluations are not counted).
- ``mnist1d_frameworks.png``: the same MLP trained by L-BFGS-B in PyTorch,
  JAX and TensorFlow (``examples/mnist1d_mlp_{jax,tensorflow}.py``), objective
  against wall time (compilation included).
- ``mnist1d_landscape.png``: the objective around the L-BFGS-B solution on
  two random filter-normalized directions (Li et al., 2018).
- ``mnist1d_landscape_path.png``: the objective on the plane spanned by the
  line from the initial point to the solution and one random
  filter-normalized direction, with the L-BFGS-B path projected onto it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, for every framework (the timing plot)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from scipy.optimize import OptimizeResult  # noqa: E402

from dict_minimize.plot import loss_landscape, plot_history, plot_landscape  # noqa: E402

OUT = HERE / "gallery"
N_TRAIN = 1000
MAXITER = 300
RECORD_EVERY = 10
DPI = 90


def _save(figure, name: str) -> Path:
    path = OUT / name
    figure.savefig(path, dpi=DPI)
    print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size // 1024} KB)")
    return path


def _torch_problem():
    import torch

    torch.set_num_threads(1)

    import mnist1d_torch as ex
    from _data import load_mnist1d

    torch.manual_seed(0)
    data = load_mnist1d(N_TRAIN)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    model = ex.make_model("mlp", seed=0)
    loss = ex.make_loss(model, ex.WEIGHT_DECAY["mlp"])
    return model, loss, x, y


def adam_history(model, loss, x, y, steps: int, lr: float = 1e-2, batch: int = 100, seed: int = 0):
    """Adam on minibatches, with a history like ``minimize``'s (full-batch values every few steps)."""
    import torch

    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    # No 'epoch' key: an epoch is 10 steps here, and markers every 10 steps would hide the curves.
    history = {key: [] for key in ("nit", "fun", "grad_norm", "time", "nfev")}
    order, position, trained = torch.randperm(len(x), generator=generator), 0, 0.0
    for step in range(1, steps + 1):
        started = time.perf_counter()
        if position + batch > len(x):
            order, position = torch.randperm(len(x), generator=generator), 0
        index = order[position:position + batch]
        position += batch
        optimizer.zero_grad()
        loss(params, x[index], y[index]).backward()
        optimizer.step()
        trained += time.perf_counter() - started  # the full-batch records below are not timed
        if step % RECORD_EVERY == 0 or step == steps:
            full = loss(params, x, y)
            grads = torch.autograd.grad(full, list(params.values()))
            history["nit"].append(step)
            history["fun"].append(float(full.detach()))
            history["grad_norm"].append(float(torch.sqrt(sum((g**2).sum() for g in grads))))
            history["time"].append(trained)
            history["nfev"].append(step)
    return OptimizeResult(history={k: np.asarray(v) for k, v in history.items()}, x=params)


def convergence_and_landscapes() -> list[Path]:
    import torch

    from dict_minimize.torch_api import minimize, parameters

    model, loss, x, y = _torch_problem()
    x0 = parameters(model)
    path = [x0]
    res = minimize(loss, x0, args=(x, y), method="L-BFGS-B", options={"maxiter": MAXITER},
                   callback=lambda intermediate_result: path.append(intermediate_result.x))
    adam = adam_history(model, loss, x, y, steps=int(res.nfev))
    print(f"L-BFGS-B: {res.nit} iterations, {res.nfev} evaluations, objective {res.fun:.4f}; "
          f"Adam: {int(adam.history['nfev'][-1])} steps, objective {adam.history['fun'][-1]:.4f}")
    drawn = plot_history([res, adam], x="nfev", labels=["L-BFGS-B (full batch)", "Adam (batch 100)"])
    drawn.figure.suptitle(f"MNIST-1D MLP, {N_TRAIN} signals: objective and gradient norm", fontsize=10)
    for ax in drawn.axes:
        ax.set_xlabel("gradient evaluations (Adam's on 100 samples)")
    written = [_save(drawn.figure, "mnist1d_history.png")]

    with torch.no_grad():
        grid = loss_landscape(loss, res.x, args=(x, y), points=31, span=1.0, seed=0,
                              progress=False)
    print(f"landscape: objective {grid.center:.4f} at the solution, {grid.values.min():.4f} to "
          f"{grid.values.max():.4f} on the grid")
    drawn = plot_landscape(grid, logz=True)
    drawn.ax.set_title("around the L-BFGS-B solution: 2 random filter-normalized directions", fontsize=9)
    written.append(_save(drawn.figure, "mnist1d_landscape.png"))

    # The plane through the solution spanned by (x0 - solution) and one random direction.
    random_direction = grid.directions[0]
    to_start = {k: x0[k] - res.x[k] for k in x0}
    with torch.no_grad():
        plane = loss_landscape(loss, res.x, args=(x, y), directions=[to_start, random_direction],
                               normalization=None, points=31, span=1.25, progress=False)
    drawn = plot_landscape(plane, path=path[::5] + [res.x], logz=True)
    drawn.ax.set_xlabel("α: from the solution (0) to the initial point (1)")
    drawn.ax.set_title("the L-BFGS-B path, projected", fontsize=9)
    written.append(_save(drawn.figure, "mnist1d_landscape_path.png"))
    return written


def frameworks() -> list[Path]:
    import jax.numpy as jnp
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    import mnist1d_mlp_jax as ex_jax
    import mnist1d_mlp_tensorflow as ex_tf
    from _data import load_mnist1d
    from dict_minimize import jax_api, tensorflow_api, torch_api

    data = load_mnist1d(N_TRAIN)
    sizes = (data.x_train.shape[1], 100, 100, data.n_classes)
    results = []
    model, loss, x, y = _torch_problem()
    results.append(torch_api.minimize(loss, torch_api.parameters(model), args=(x, y), method="L-BFGS-B",
                                      options={"maxiter": MAXITER}))
    args = (jnp.asarray(data.x_train), jnp.asarray(data.y_train, jnp.int32), 3e-3)
    results.append(jax_api.minimize(ex_jax.loss, ex_jax.init_mlp(sizes), args=args, method="L-BFGS-B",
                                    options={"maxiter": MAXITER}))
    args = (tf.constant(data.x_train), tf.constant(data.y_train), 3e-3)
    results.append(tensorflow_api.minimize(ex_tf.loss, ex_tf.init_mlp(sizes), args=args, method="L-BFGS-B",
                                           options={"maxiter": MAXITER}))
    # The same shapes and objective (the torch example's 0.5 * 6e-3 is the others' 3e-3), each
    # example's own initialization.
    for name, r in zip(("PyTorch", "JAX", "TensorFlow"), results):
        print(f"{name}: {r.nit} iterations in {r.history['time'][-1]:.2f} s "
              f"(first iteration at {r.history['time'][0]:.2f} s), objective {r.fun:.4f}")
    drawn = plot_history(results, x="time", y="fun", labels=["PyTorch", "JAX", "TensorFlow"])
    drawn.axes[0].set_title(f"MNIST-1D MLP, L-BFGS-B, {MAXITER} iterations, one CPU", fontsize=9)
    drawn.axes[0].set_xlabel("wall time (s), compilation included")
    return [_save(drawn.figure, "mnist1d_frameworks.png")]


def main() -> list[Path]:
    OUT.mkdir(exist_ok=True)
    return convergence_and_landscapes() + frameworks()


if __name__ == "__main__":
    main()
