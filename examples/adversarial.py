"""Adversarial examples for the digits CNN with L-BFGS-B's bounds, in PyTorch, JAX or TensorFlow.

Two attacks on the test images the CNN classifies correctly (353 of 360):

1. **Szegedy et al. (2013), box-constrained L-BFGS, targeted.** For each image
   ``x`` and a target label ``t != y`` (drawn at random, seed 0), minimize
   ``c * ||x' - x||^2 + CE(f(x'), t)`` over ``x'`` with every pixel bounded in
   [0, 1] (``bounds={"x": (0.0, 1.0)}``). ``c`` weighs the perturbation's size:
   the smallest perturbation comes from the largest ``c`` whose minimizer
   still reaches the target. Each image has its own ``c``, searched on a log
   scale: from ``c = 1``, divide by 10 (more weight on reaching the target)
   while the target is missed, multiply by 10 while it is reached, then
   bisect geometrically between the largest success and the smallest failure;
   the smallest successful perturbation of the rounds is kept. All images are
   attacked in one ``minimize`` call per round: the objective is the sum of
   the images' independent objectives, each with its own ``c`` (an array in
   ``args``), so one call of the objective is one gradient evaluation of
   every image.
2. **L-infinity attack as a box.** Bounds ``[max(0, x - eps), min(1, x + eps)]``
   per pixel; maximize the cross-entropy of the true label (minimize its
   negative) with L-BFGS-B, starting at ``x``; against PGD (Madry et al.,
   2018: uniform random start in the box, sign steps of ``2.5 * eps / steps``,
   projection) given *the number of gradient evaluations L-BFGS-B actually
   made* (``maxfun=budget``; the objective's real calls are counted, see
   ``_bounded.Recorder``). Success: the image is misclassified at the final
   point.

Reported per framework: success rate, median L2 and L-inf of the successful
perturbations, gradient evaluations (real calls of the objective), wall time.
The network is the PyTorch-trained CNN of ``_digits_cnn.py``; JAX and
TensorFlow run the same weights transferred to their own forward pass.

Run ``python examples/adversarial.py --framework jax --n 100 --out /tmp/adv``
(``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

import _bounded
import _digits_cnn as cnn

EPSILONS = (0.05, 0.1, 0.2, 0.3)
LOSSES = ("margin", "ce")


class Attacks:
    """The attacks' objectives for one framework (compiled once per framework and shape)."""

    def __init__(self, ops: _bounded.Ops, loss: str = "margin"):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.ops, self.loss = ops, loss
        self.recorder = _bounded.Recorder()
        self.minimize = ops.api.minimize
        self._vg = ops.value_and_grad(lambda x, y: self.linf_loss({"x": x}, y) * -1.0)

    def szegedy_loss(self, p: dict, x, c, target_onehot):
        """``sum_i c_i ||x'_i - x_i||^2 + CE(f(x'_i), t_i)``: independent per image."""
        ops = self.ops
        xa = ops.probe(p["x"], self.recorder)
        size = ops.sum((xa - x) ** 2, axis=(1, 2))
        ce = -ops.sum(target_onehot * ops.log_softmax(ops.logits(xa)), axis=1)
        return ops.sum(c * size + ce)

    def linf_loss(self, p: dict, y_onehot):
        """The L-inf attack's objective, to be minimized (``self.loss`` says which).

        ``'ce'``: minus the summed cross-entropy of the true labels.
        ``'margin'``: the summed log-odds margin ``z_y - logsumexp_{j != y} z_j``
        of the logits ``z`` (negative once the image is misclassified).
        """
        ops = self.ops
        xa = ops.probe(p["x"], self.recorder)
        z = ops.logits(xa)
        if self.loss == "ce":
            return ops.sum(y_onehot * ops.log_softmax(z))
        return ops.sum(ops.sum(y_onehot * z, axis=1) - ops.logsumexp(z - 1e4 * y_onehot))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.ops.numpy(self.ops.logits(self.ops.tensor(x))).argmax(1)


def _onehot(labels: np.ndarray) -> np.ndarray:
    return np.eye(10)[labels]


def correct_test_images(ops: _bounded.Ops, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test images the CNN classifies correctly, and their labels."""
    data = cnn.load_split()
    pred = ops.numpy(ops.logits(ops.tensor(data.x_test))).argmax(1)
    keep = pred == data.y_test
    x, y = data.x_test[keep], data.y_test[keep]
    return (x, y) if n is None else (x[:n], y[:n])


def targets_for(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random target label different from each true label."""
    rng = np.random.default_rng(seed)
    return (y + rng.integers(1, 10, size=y.shape)) % 10


def szegedy(att: Attacks, x: np.ndarray, y: np.ndarray, rounds: int = 10, maxiter: int = 200,
            seed: int = 0) -> dict[str, Any]:
    """The targeted box-constrained L-BFGS attack with a per-image search on ``c``.

    Returns a dict: ``x_adv`` (the smallest successful perturbation per image;
    the clean image where none succeeded), ``target``, ``success`` (bool per
    image), ``c``, ``l2``, ``linf``, ``evals`` (real objective calls),
    ``wall_s``, ``violation`` (largest distance of an evaluated point from
    [0, 1]).
    """
    ops = att.ops
    n = len(x)
    target = targets_for(y, seed)
    xt, tt = ops.tensor(x), ops.tensor(_onehot(target))
    c = np.ones(n)
    c_ok = np.full(n, np.nan)  # largest c that reached the target
    c_bad = np.full(n, np.nan)  # smallest c that missed it
    best = x.copy()
    best_l2 = np.full(n, np.inf)
    att.recorder.reset(0.0, 1.0)
    evals, (wall, nit) = 0, (0.0, 0)
    for _ in range(rounds):
        res, dt = _bounded.timed(lambda: att.minimize(
            att.szegedy_loss, {"x": xt}, args=(xt, ops.tensor(c), tt), method="L-BFGS-B",
            bounds={"x": (0.0, 1.0)}, options={"maxiter": maxiter}))
        wall += dt
        nit += int(res.nit)
        xa = ops.numpy(res.x["x"])
        ok = att.predict(xa) == target
        l2 = np.sqrt(((xa - x) ** 2).sum(axis=(1, 2)))
        better = ok & (l2 < best_l2)
        best[better], best_l2[better] = xa[better], l2[better]
        c_ok = np.where(ok, np.fmax(c_ok, c), c_ok)
        c_bad = np.where(~ok, np.fmin(c_bad, c), c_bad)
        c = np.where(np.isnan(c_bad), c * 10.0, np.where(np.isnan(c_ok), c / 10.0, np.sqrt(c_ok * c_bad)))
    success = np.isfinite(best_l2)
    delta = best - x
    return {
        "x_adv": best, "target": target, "success": success, "c": c_ok,
        "l2": np.sqrt((delta**2).sum(axis=(1, 2))), "linf": np.abs(delta).max(axis=(1, 2)),
        "evals": att.recorder.calls, "nit": nit, "wall_s": wall, "violation": att.recorder.violation,
    }


def linf_box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The L-infinity ball around ``x`` intersected with [0, 1], per pixel."""
    return np.maximum(0.0, x - eps), np.minimum(1.0, x + eps)


def linf_lbfgsb(att: Attacks, x: np.ndarray, y: np.ndarray, eps: float, budget: int) -> dict[str, Any]:
    """Maximize the cross-entropy over the L-inf box with L-BFGS-B (``maxfun=budget``)."""
    ops = att.ops
    lo, hi = linf_box(x, eps)
    att.recorder.reset(lo, hi)
    res, wall = _bounded.timed(lambda: att.minimize(
        att.linf_loss, {"x": ops.tensor(x)}, args=(ops.tensor(_onehot(y)),), method="L-BFGS-B",
        bounds={"x": (lo, hi)}, options={"maxfun": budget, "maxiter": 10 * budget}))
    return _linf_report(att, x, y, ops.numpy(res.x["x"]), wall)


def linf_pgd(att: Attacks, x: np.ndarray, y: np.ndarray, eps: float, steps: int, seed: int = 0) -> dict:
    """PGD with ``steps`` gradient evaluations on the same loss."""
    lo, hi = linf_box(x, eps)
    att.recorder.reset(lo, hi)
    yt = att.ops.tensor(_onehot(y))
    xa, wall = _bounded.timed(
        lambda: _bounded.pgd_linf(att._vg, x, lo, hi, eps, steps, args=(yt,), seed=seed))
    return _linf_report(att, x, y, xa, wall)


def _linf_report(att: Attacks, x, y, xa, wall) -> dict[str, Any]:
    success = att.predict(xa) != y
    delta = xa - x
    return {
        "x_adv": xa, "success": success, "l2": np.sqrt((delta**2).sum(axis=(1, 2))),
        "linf": np.abs(delta).max(axis=(1, 2)), "evals": att.recorder.calls, "wall_s": wall,
        "violation": att.recorder.violation,
    }


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """Success rate, medians over the successful images, evaluations, wall."""
    ok = r["success"]
    return {
        "success_rate": float(ok.mean()),
        "median_l2": float(np.median(r["l2"][ok])) if ok.any() else float("nan"),
        "median_linf": float(np.median(r["linf"][ok])) if ok.any() else float("nan"),
        "evals": int(r["evals"]), "wall_s": float(r["wall_s"]), "violation": float(r["violation"]),
    }


def run(framework: str = "torch", n: int | None = None, rounds: int = 10, maxiter: int = 200,
        budget: int = 20, epsilons=EPSILONS, losses=LOSSES, out: str | None = None) -> dict[str, Any]:
    """Both attacks in ``framework``; a JSON-ready summary (and pictures under ``out``)."""
    ops = _bounded.ops_for(framework)
    atts = {loss: Attacks(ops, loss) for loss in losses}
    att = atts[losses[0]]
    x, y = correct_test_images(ops, n)
    result: dict[str, Any] = {"framework": framework, "n_images": int(len(x))}
    sz = szegedy(att, x, y, rounds=rounds, maxiter=maxiter)
    result["szegedy"] = summary(sz) | {"rounds": rounds}
    result["linf"] = []
    kept = {}
    for loss, a in atts.items():
        for eps in epsilons:
            lb = linf_lbfgsb(a, x, y, eps, budget)
            pgd = linf_pgd(a, x, y, eps, steps=lb["evals"])
            result["linf"].append({"eps": eps, "loss": loss, "lbfgsb": summary(lb), "pgd": summary(pgd)})
            kept[loss, eps] = (lb, pgd)
    if out:
        os.makedirs(out, exist_ok=True)
        import _pictures

        _pictures.adversarial_grid(x, y, sz, att.predict(sz["x_adv"]),
                                   os.path.join(out, f"adversarial_szegedy_{framework}.png"))
        eps = epsilons[len(epsilons) // 2]
        lb, pgd = kept[losses[0], eps]
        _pictures.linf_pair(x, y, lb, pgd, att.predict(lb["x_adv"]), att.predict(pgd["x_adv"]), eps,
                            os.path.join(out, f"adversarial_linf_{framework}.png"))
    return result


def print_table(result: dict[str, Any]) -> None:
    s = result["szegedy"]
    print(f"[{result['framework']}] {result['n_images']} correctly classified test images")
    print(f"Szegedy targeted L-BFGS-B: success {s['success_rate']:.3f}, median L2 {s['median_l2']:.3f}, "
          f"median Linf {s['median_linf']:.3f}, {s['evals']} evaluations, {s['wall_s']:.1f} s")
    print("loss    eps   method    success  median L2  evals  wall s")
    for row in result["linf"]:
        for m in ("lbfgsb", "pgd"):
            r = row[m]
            print(f"{row['loss']:<7} {row['eps']:<5} {m:<9} {r['success_rate']:.3f}    "
                  f"{r['median_l2']:.3f}      "
                  f"{r['evals']:<5}  {r['wall_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=_bounded.FRAMEWORKS, default="torch")
    parser.add_argument("--n", type=int, default=None, help="attack the first n correct test images")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of the search on c")
    parser.add_argument("--maxiter", type=int, default=200, help="L-BFGS-B iterations per round")
    parser.add_argument("--budget", type=int, default=20, help="gradient evaluations of the L-inf attack")
    parser.add_argument("--loss", choices=LOSSES, nargs="+", default=list(LOSSES),
                        help="L-inf attack objectives (the first one is pictured)")
    parser.add_argument("--out", default=None, help="directory for the PNGs")
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args()
    result = run(args.framework, args.n, args.rounds, args.maxiter, args.budget, losses=tuple(args.loss),
                 out=args.out)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
