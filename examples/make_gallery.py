"""Regenerate the bounded-input pictures in docs/gallery/ (PyTorch, the examples' default sizes).

Run ``python examples/make_gallery.py`` (a few minutes on two CPU cores;
``--out DIR`` to write elsewhere). It writes:

- ``adversarial_szegedy_torch.png``: original / perturbation / adversarial,
  with labels, targets and predictions (the targeted minimal attack);
- ``adversarial_linf_torch.png``: L-BFGS-B and PGD at eps = 0.2, equal
  gradient evaluations;
- ``visualize_torch.png``, ``visualize_curves_torch.png``: class and channel
  visualizations by the three methods, and best objective against evaluations;
- ``texture.png``, ``texture_curves.png``, ``deep_dream.png``: source vs
  synthesized textures, loss against evaluations, and the bounded dream.
"""

from __future__ import annotations

import argparse
import os

import adversarial
import texture
import visualize

GALLERY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "gallery")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=GALLERY)
    args = parser.parse_args()
    adversarial.run("torch", out=args.out, losses=("margin",))
    visualize.run("torch", out=args.out)
    texture.run(out=args.out)
    for name in sorted(os.listdir(args.out)):
        if name.endswith(".png"):
            path = os.path.join(args.out, name)
            print(f"{path}: {os.path.getsize(path) // 1024} KB")


if __name__ == "__main__":
    main()
