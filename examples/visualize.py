"""Feature visualization of the digits CNN with pixels bounded in [0, 1]: L-BFGS-B against the usual tricks.

For each unit (the 10 class logits, and the mean activation of channels
0..4 of the second convolution) find an 8x8 image ``x`` in [0, 1] that
maximizes

    J(x) = unit(x) - l2 * ||x||^2 - tv * TV(x),

``TV(x)`` the sum of squared differences of neighbouring pixels. The weights
are set against each unit's scale (logits reach about 50, channel means
about 3): ``l2 = 0.5, tv = 1`` for the logits, ``l2 = 0.02, tv = 0.05`` for
the channels; with the channels' weights the logits' images are all
black-and-white corners of the box. Each unit is its own problem, from the same start (uniform in
[0.4, 0.6], seed 0). Three methods, at equal gradient evaluations:

- **L-BFGS-B**: ``minimize(-J, {"x": x0}, bounds={"x": (0.0, 1.0)},
  method="L-BFGS-B", options={"maxfun": budget})``; no step size;
- **Adam + clamp**: Adam steps on -J, each followed by clipping to [0, 1];
  its learning rate is the best (highest mean J over the units) of
  ``ADAM_LRS``;
- **normalized gradient ascent + clamp** (the lucid / Keras trick): steps of
  ``lr * g / std(g)``, clipped; ``lr`` the best of ``NORMALIZED_LRS``.

Each baseline gets, per unit, exactly the number of gradient evaluations
L-BFGS-B made on that unit (real calls of the objective, counted by
``_bounded.Recorder``). Reported: J of the image each method returns (its
last iterate; L-BFGS-B's result), the fraction of its pixels at 0 or 1,
gradient evaluations, wall time.

Run ``python examples/visualize.py --out /tmp/vis`` (``--framework jax``,
``--budget 50``; ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

import _bounded

PENALTY_CLASS = (0.5, 1.0)  # (l2, tv)
PENALTY_CHANNEL = (0.02, 0.05)
ADAM_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
NORMALIZED_LRS = (0.01, 0.03, 0.1, 0.3)
CHANNELS = (0, 1, 2, 3, 4)


class Visualization:
    """The objective ``-J`` of one framework; the unit is chosen by weight vectors in ``args``."""

    def __init__(self, ops: _bounded.Ops):
        self.ops = ops
        self.recorder = _bounded.Recorder(0.0, 1.0)
        self._vg = ops.value_and_grad(lambda x, wc, wh, pen: self.loss({"x": x}, wc, wh, pen))

    def gain(self, x, w_class, w_channel, penalty):
        """``J`` of images ``x`` ``(n, 8, 8)``, per image: ``w_class . logits + w_channel . mean(conv2)``.

        ``penalty`` is ``(l2, tv)``, a tensor of shape (2,).
        """
        ops = self.ops
        _, h2 = ops.features(x)
        unit = (ops.sum(w_class * ops.logits(x), axis=1)
                + ops.sum(w_channel * ops.mean(h2, axis=(2, 3)), axis=1))
        dx, dy = x[:, 1:, :] - x[:, :-1, :], x[:, :, 1:] - x[:, :, :-1]
        tv = ops.sum(dx**2, axis=(1, 2)) + ops.sum(dy**2, axis=(1, 2))
        return unit - penalty[0] * ops.sum(x**2, axis=(1, 2)) - penalty[1] * tv

    def loss(self, p: dict, w_class, w_channel, penalty):
        """``-J`` (to be minimized), recorded: the point and the value of every evaluation."""
        ops = self.ops
        x = ops.probe(p["x"], self.recorder)
        return ops.report(-ops.sum(self.gain(x, w_class, w_channel, penalty)), self.recorder)

    def score(self, x: np.ndarray, *args) -> float:
        """``J`` of one image, not recorded."""
        ops = self.ops
        return float(ops.numpy(self.gain(ops.tensor(x), *args))[0])


def units() -> list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(name, (class weights (1, 10), channel weights (1, 32), (l2, tv))) of each unit."""
    out = []
    for k in range(10):
        out.append((f"class {k}", (np.eye(10)[k][None], np.zeros((1, 32)), np.array(PENALTY_CLASS))))
    for c in CHANNELS:
        out.append((f"conv2 ch {c}", (np.zeros((1, 10)), np.eye(32)[c][None], np.array(PENALTY_CHANNEL))))
    return out


def _run_one(vis: Visualization, method: str, lr: float | None, x0, spec, budget: int) -> dict[str, Any]:
    vis.recorder.reset(0.0, 1.0)
    args = tuple(vis.ops.tensor(a) for a in spec)
    if method == "lbfgsb":
        res, wall = _bounded.timed(lambda: vis.ops.api.minimize(
            vis.loss, {"x": vis.ops.tensor(x0)}, args=args, method="L-BFGS-B",
            bounds={"x": (0.0, 1.0)}, options={"maxfun": budget, "maxiter": 10 * budget}))
        x = vis.ops.numpy(res.x["x"])
    elif method == "adam":
        x, wall = _bounded.timed(lambda: _bounded.adam_clamp(vis._vg, x0, 0.0, 1.0, lr, budget, args))
    else:
        x, wall = _bounded.timed(lambda: _bounded.normalized_ascent(vis._vg, x0, 0.0, 1.0, lr, budget, args))
    return {
        "x": x, "objective": vis.score(x, *args), "evals": vis.recorder.calls, "wall_s": wall,
        "at_bound": float(np.mean((x <= 0.0) | (x >= 1.0))), "violation": vis.recorder.violation,
        "history": [-v for v in vis.recorder.history],
    }


def run(framework: str = "torch", budget: int = 100, out: str | None = None, seed: int = 0,
        n_units: int | None = None) -> dict[str, Any]:
    """Every unit by every method; a JSON-ready summary (pictures under ``out``)."""
    ops = _bounded.ops_for(framework)
    vis = Visualization(ops)
    x0 = np.random.default_rng(seed).uniform(0.4, 0.6, size=(1, 8, 8))
    todo = units()[:n_units]
    runs: dict[str, list[dict]] = {"lbfgsb": []}
    for name, spec in todo:
        runs["lbfgsb"].append(_run_one(vis, "lbfgsb", None, x0, spec, budget))
    for method, lrs in (("adam", ADAM_LRS), ("normalized", NORMALIZED_LRS)):
        for lr in lrs:
            runs[f"{method} lr={lr}"] = [
                _run_one(vis, method, lr, x0, spec, r["evals"]) for (_, spec), r in zip(todo, runs["lbfgsb"])]
    summary = {m: _summarize(rs) for m, rs in runs.items()}
    best = {m: max((k for k in summary if k.startswith(m)), key=lambda k: summary[k]["mean_objective"])
            for m in ("adam", "normalized")}
    result = {"framework": framework, "budget": budget, "units": [u[0] for u in todo], "methods": summary,
              "best_lr": best}
    if out:
        _pictures(out, framework, todo, runs, best)
    return result


def _summarize(rs: list[dict]) -> dict[str, Any]:
    return {
        "mean_objective": float(np.mean([r["objective"] for r in rs])),
        "objectives": [r["objective"] for r in rs],
        "mean_at_bound": float(np.mean([r["at_bound"] for r in rs])),
        "evals": int(sum(r["evals"] for r in rs)), "wall_s": float(sum(r["wall_s"] for r in rs)),
        "violation": float(max(r["violation"] for r in rs)),
    }


def _pictures(out: str, framework: str, todo, runs, best) -> None:
    import _pictures

    os.makedirs(out, exist_ok=True)
    rows = [("L-BFGS-B", runs["lbfgsb"]), (best["adam"], runs[best["adam"]]),
            (best["normalized"], runs[best["normalized"]])]
    images, titles = [], []
    for label, rs in rows:
        for (name, _), r in zip(todo, rs):
            images.append(r["x"][0])
            titles.append(f"{name}\nJ={r['objective']:.1f}")
    _pictures.image_grid(images, titles, os.path.join(out, f"visualize_{framework}.png"), ncols=len(todo),
                         suptitle="rows: " + ", ".join(label for label, _ in rows))
    panels = {}
    for i in (0, len(todo) - 1):
        panels[todo[i][0]] = {label: np.maximum.accumulate(rs[i]["history"]) for label, rs in rows}
    _pictures.curves(panels, os.path.join(out, f"visualize_curves_{framework}.png"),
                     ylabel="best J so far", suptitle="feature visualization, equal gradient evaluations")


def print_table(result: dict[str, Any]) -> None:
    print(f"[{result['framework']}] {len(result['units'])} units, budget {result['budget']}; "
          f"best lr: {result['best_lr']}")
    print("method               mean J    at bound  evals  wall s")
    for m, s in result["methods"].items():
        print(f"{m:<20} {s['mean_objective']:8.3f}  {s['mean_at_bound']:.3f}     {s['evals']:<5}  "
              f"{s['wall_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=_bounded.FRAMEWORKS, default="torch")
    parser.add_argument("--budget", type=int, default=100, help="L-BFGS-B's maxfun per unit")
    parser.add_argument("--out", default=None, help="directory for the PNGs")
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args()
    result = run(args.framework, args.budget, args.out)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
