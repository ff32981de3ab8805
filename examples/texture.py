"""Texture synthesis and a bounded deep dream with random-filter features, in PyTorch, pixels in [0, 1].

**Texture synthesis** (Gatys et al., 2015) with the random shallow features
of Ustyuzhaninov et al. (2017), who show that one layer of random filters at
several scales is enough: the source is a 128x128 crop of the foliage in
scikit-learn's ``load_sample_image("china.jpg")``. Features: 32 random 5x5
filters (Gaussian, seeded; the image centred on 0.5 first, circular
padding) followed by ReLU,
applied to the image at four scales (average-pooled by 1, 2, 4, 8). The loss
is the sum over scales of ``||G(x) - G(s)||^2 / ||G(s)||^2``, ``G`` the
32x32 Gram matrix of the features divided by the number of positions. The
synthesized image ``x`` in [0, 1]^(3x128x128) starts from noise (seed 0):
``start="grey"`` (the default) uniform in [0.4, 0.6], ``start="noise"``
uniform in [0, 1]; it is optimized by

- **L-BFGS-B**: ``torch_api.minimize(loss, {"x": x0}, bounds={"x": (0.0, 1.0)},
  method="L-BFGS-B", options={"maxfun": budget})``;
- **Adam + clamp**: ``torch.optim.Adam`` on ``x``, clipping to [0, 1] after
  each step, learning rate the best of ``ADAM_LRS`` (lowest final loss),
  for the number of gradient evaluations L-BFGS-B actually made (real calls
  of the loss, counted).

Both minimize the loss times ``loss_scale``: ``"pixels"`` (the default)
multiplies it by the number of pixels (3 x size x size), ``"none"`` leaves
it as it is. Adam does not care (its steps are invariant to the objective's
scale, up to its eps); L-BFGS-B does. Early on the loss is concave along
the way (the features must gain energy to match the Gram matrices; at 64x64
``s'y < 0`` at each of the first 14 iterations), SciPy's L-BFGS-B skips
those curvature pairs, and with no pair its Hessian model is
the identity, so its steps are the raw gradient: with the loss unscaled the
gradient is so small that after 200 evaluations the 128x128 loss was still
2.12, where Adam (lr 1.0) reached 2.1e-5; scaled by the pixels, L-BFGS-B
reached 3.3e-6. Plain ``scipy.optimize.minimize`` on the
flat vector gives the same numbers: L-BFGS-B's behaviour, not the wrapper's.
The benchmark reports both scales.

**Deep dream, bounded**: amplify the second scale's features on the photo
itself, maximizing their sum of squares with L-BFGS-B for ``dream_budget``
evaluations, every pixel kept within ``DREAM_EPS`` of the photo and in
[0, 1] (``bounds={"x": (max(0, p - eps), min(1, p + eps))}``).

``--size 64`` runs everything on the crop downsampled to 64x64 (about 12 s
of CPU; 128x128 takes about 30 s); ``--out DIR`` writes the PNGs. Run
``python examples/texture.py --out /tmp/texture``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import _bounded
from dict_minimize.torch_api import minimize

ADAM_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
SCALES = (1, 2, 4, 8)
CHANNELS = 32
KERNEL = 5
DREAM_EPS = 0.15
CROP = (290, 510)  # top-left corner (row, column) of the 128x128 crop: the trees on the right


def source_image(size: int = 128) -> np.ndarray:
    """The 128x128 crop of ``china.jpg`` as (3, size, size) float64 in [0, 1] (average-pooled to ``size``)."""
    from sklearn.datasets import load_sample_image

    if size < 16 or 128 % size:
        raise ValueError(f"size must divide 128 and be at least 16, got {size}")
    r, c = CROP
    crop = load_sample_image("china.jpg")[r:r + 128, c:c + 128].astype(np.float64) / 255.0
    img = torch.as_tensor(crop.transpose(2, 0, 1))[None]
    return F.avg_pool2d(img, 128 // size)[0].numpy()


class RandomFeatures:
    """One layer of random filters at several scales; Gram-matrix texture loss and dream objective."""

    def __init__(self, source: np.ndarray, seed: int = 0, loss_scale: str = "pixels"):
        if loss_scale not in LOSS_SCALES:
            raise ValueError(f"loss_scale must be one of {LOSS_SCALES}, got {loss_scale!r}")
        self.scale = float(source.size) if loss_scale == "pixels" else 1.0
        gen = torch.Generator().manual_seed(seed)
        self.filters = torch.randn(CHANNELS, 3, KERNEL, KERNEL, generator=gen, dtype=torch.float64)
        self.filters /= np.sqrt(3 * KERNEL * KERNEL)
        self.recorder = _bounded.Recorder(0.0, 1.0)
        self.source = torch.as_tensor(source)
        with torch.no_grad():
            self.target = [g for g in self.grams(self.source)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ReLU(random conv) of ``x - 0.5`` at each scale: ``(CHANNELS, h, w)`` each."""
        out = []
        for s in SCALES:
            xs = F.avg_pool2d(x[None] - 0.5, s) if s > 1 else x[None] - 0.5
            # Circular padding: a texture has no edges (zero padding draws a frame).
            xs = F.pad(xs, (KERNEL // 2,) * 4, mode="circular")
            out.append(F.relu(F.conv2d(xs, self.filters))[0])
        return out

    def grams(self, x: torch.Tensor) -> list[torch.Tensor]:
        grams = []
        for f in self.features(x):
            flat = f.reshape(CHANNELS, -1)
            grams.append(flat @ flat.T / flat.shape[1])
        return grams

    def texture_loss(self, p: dict) -> torch.Tensor:
        """``scale`` times the sum over scales of the relative squared Gram error; records each call.

        The recorded value is the unscaled loss.
        """
        x = p["x"]
        self.recorder(x.detach().numpy())
        loss = sum(((g - t) ** 2).sum() / (t**2).sum() for g, t in zip(self.grams(x), self.target))
        self.recorder.value(loss.detach())
        return loss * self.scale

    def dream_loss(self, p: dict) -> torch.Tensor:
        """Minus the sum of squares of the second scale's features (to be minimized); records.

        A sum, not a mean: this objective is concave, so L-BFGS-B keeps no
        curvature pair and steps by the raw gradient (its initial Hessian
        is the identity); the mean's gradient is so small that 100
        evaluations moved no pixel by more than 0.008.
        """
        x = p["x"]
        self.recorder(x.detach().numpy())
        loss = -(self.features(x)[1] ** 2).sum()
        self.recorder.value(loss.detach())
        return loss


def _lbfgsb(feats: RandomFeatures, fun, x0: np.ndarray, lo, hi, budget: int) -> dict[str, Any]:
    feats.recorder.reset(lo, hi)
    res, wall = _bounded.timed(lambda: minimize(
        fun, {"x": torch.as_tensor(x0)}, method="L-BFGS-B", bounds={"x": (lo, hi)},
        options={"maxfun": budget, "maxiter": 10 * budget}))
    return {"x": res.x["x"].numpy(), "evals": feats.recorder.calls, "wall_s": wall,
            "violation": feats.recorder.violation, "history": list(feats.recorder.history)}


def _adam(feats: RandomFeatures, x0: np.ndarray, lr: float, steps: int) -> dict[str, Any]:
    feats.recorder.reset(0.0, 1.0)

    def run():
        x = torch.tensor(x0, requires_grad=True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            feats.texture_loss({"x": x}).backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        return x.detach().numpy()

    x, wall = _bounded.timed(run)
    return {"x": x, "evals": feats.recorder.calls, "wall_s": wall, "violation": feats.recorder.violation,
            "history": list(feats.recorder.history)}


def _final(feats: RandomFeatures, r: dict) -> dict:
    with torch.no_grad():
        t = torch.as_tensor(r["x"])
        loss = sum(((g - s) ** 2).sum() / (s**2).sum() for g, s in zip(feats.grams(t), feats.target))
    x = r["x"]
    return {"loss": float(loss), "evals": r["evals"], "wall_s": r["wall_s"], "violation": r["violation"],
            "at_bound": float(np.mean((x <= 0.0) | (x >= 1.0)))}


STARTS = {"grey": (0.4, 0.6), "noise": (0.0, 1.0)}
LOSS_SCALES = ("pixels", "none")


def run(size: int = 128, budget: int = 200, dream_budget: int = 30, out: str | None = None,
        seed: int = 0, start: str = "grey", loss_scale: str = "pixels") -> dict[str, Any]:
    """Texture synthesis by both methods and the bounded dream; a JSON-ready summary."""
    torch.manual_seed(seed)
    src = source_image(size)
    feats = RandomFeatures(src, seed, loss_scale)
    if start not in STARTS:
        raise ValueError(f"start must be one of {tuple(STARTS)}, got {start!r}")
    x0 = np.random.default_rng(seed).uniform(*STARTS[start], size=src.shape)
    runs = {"lbfgsb": _lbfgsb(feats, feats.texture_loss, x0, 0.0, 1.0, budget)}
    n = runs["lbfgsb"]["evals"]
    for lr in ADAM_LRS:
        runs[f"adam lr={lr}"] = _adam(feats, x0, lr, n)
    summary = {m: _final(feats, r) for m, r in runs.items()}
    best_adam = min((m for m in summary if m.startswith("adam")), key=lambda m: summary[m]["loss"])
    lo, hi = np.maximum(0.0, src - DREAM_EPS), np.minimum(1.0, src + DREAM_EPS)
    dream = _lbfgsb(feats, feats.dream_loss, src, lo, hi, dream_budget)
    with torch.no_grad():
        before = float((feats.features(torch.as_tensor(src))[1] ** 2).mean())
        after = float((feats.features(torch.as_tensor(dream["x"]))[1] ** 2).mean())
    at_box = np.isclose(dream["x"], lo) | np.isclose(dream["x"], hi)
    result = {
        "size": size, "budget": budget, "start": start, "loss_scale": loss_scale, "methods": summary,
        "best_adam": best_adam,
        "dream": {"mean_square_before": before, "mean_square_after": after, "evals": dream["evals"],
                  "wall_s": dream["wall_s"], "violation": dream["violation"], "eps": DREAM_EPS,
                  "at_bound": float(at_box.mean())},
    }
    if out:
        import _pictures

        os.makedirs(out, exist_ok=True)
        _pictures.image_grid(
            [src, runs["lbfgsb"]["x"], runs[best_adam]["x"]],
            ["source (china.jpg)", f"L-BFGS-B, loss {summary['lbfgsb']['loss']:.3g}",
             f"{best_adam}, loss {summary[best_adam]['loss']:.3g}"],
            os.path.join(out, "texture.png"), suptitle=f"Gram matching, random filters, {n} evaluations each",
            scale=2.0, dpi=64)
        _pictures.curves({"texture loss": {"L-BFGS-B": np.minimum.accumulate(runs["lbfgsb"]["history"]),
                                           best_adam: np.minimum.accumulate(runs[best_adam]["history"])}},
                         os.path.join(out, "texture_curves.png"), ylabel="best loss so far", log=True)
        _pictures.image_grid([src, dream["x"]], ["photo", f"bounded dream (|x - photo| <= {DREAM_EPS})"],
                             os.path.join(out, "deep_dream.png"), scale=2.0, dpi=64)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"texture {result['size']}x{result['size']}, start {result['start']}, "
          f"loss scale {result['loss_scale']}; best Adam: {result['best_adam']}")
    print("method          loss      at bound  evals  wall s")
    for m, s in result["methods"].items():
        print(f"{m:<15} {s['loss']:.4g}   {s['at_bound']:.3f}     {s['evals']:<5}  {s['wall_s']:.1f}")
    d = result["dream"]
    print(f"dream: feature mean square {d['mean_square_before']:.4g} -> {d['mean_square_after']:.4g}, "
          f"{d['evals']} evaluations, {d['wall_s']:.1f} s, {d['at_bound']:.3f} of the pixels at a bound")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side (divides 128)")
    parser.add_argument("--budget", type=int, default=200, help="L-BFGS-B's maxfun for the texture")
    parser.add_argument("--dream-budget", type=int, default=30)
    parser.add_argument("--start", choices=tuple(STARTS), default="grey")
    parser.add_argument("--loss-scale", choices=LOSS_SCALES, default="pixels")
    parser.add_argument("--out", default=None, help="directory for the PNGs")
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args()
    result = run(args.size, args.budget, args.dream_budget, args.out, start=args.start,
                 loss_scale=args.loss_scale)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
