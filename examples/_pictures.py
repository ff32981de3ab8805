"""Matplotlib figures of the bounded-input examples (small PNGs for docs/gallery/).

Every function writes one PNG and returns its path. matplotlib is imported
here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DPI = 80


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, dpi: int = DPI) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def adversarial_grid(x: np.ndarray, y: np.ndarray, sz: dict, pred: np.ndarray, path: str, k: int = 8) -> str:
    """Original / perturbation / adversarial for the first ``k`` images, with labels."""
    plt = _plt()
    fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 5.0))
    for j in range(k):
        delta = sz["x_adv"][j] - x[j]
        m = max(np.abs(delta).max(), 1e-12)
        panels = [
            (x[j], "gray", 0, 1, f"label {y[j]}"),
            (delta, "RdBu_r", -m, m, f"L2 {np.sqrt((delta ** 2).sum()):.2f}"),
            (sz["x_adv"][j], "gray", 0, 1, f"target {sz['target'][j]}\npred {pred[j]}"),
        ]
        for i, (img, cmap, lo, hi, title) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("perturbation", fontsize=8)
    axes[2, 0].set_ylabel("adversarial", fontsize=8)
    fig.suptitle("Szegedy et al. box-constrained L-BFGS-B, targeted, minimal c-search", fontsize=9)
    return _save(fig, path)


def linf_pair(x, y, lb: dict, pgd: dict, pred_lb, pred_pgd, eps: float, path: str, k: int = 8) -> str:
    """Original, L-BFGS-B and PGD adversarials at one eps, with predicted labels."""
    plt = _plt()
    fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 5.0))
    rows = [(x, [f"label {v}" for v in y[:k]], "original"),
            (lb["x_adv"], [f"pred {v}" for v in pred_lb[:k]], "L-BFGS-B"),
            (pgd["x_adv"], [f"pred {v}" for v in pred_pgd[:k]], "PGD")]
    for i, (imgs, titles, name) in enumerate(rows):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1)
            ax.set_title(titles[j], fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"L-inf attack, eps = {eps}, {lb['evals']} gradient evaluations each", fontsize=9)
    return _save(fig, path)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: str, suptitle: str = "",
               ncols: int | None = None, cmap: str = "gray", scale: float = 1.0, dpi: int = DPI) -> str:
    """Images in a grid; 2-D arrays as ``cmap`` in [0, 1], (3, H, W) arrays as RGB."""
    plt = _plt()
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * scale * ncols, 1.8 * scale * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        img = np.asarray(img)
        if img.ndim == 3:
            ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
        else:
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("on")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path, dpi)


def curves(panels: dict[str, dict[str, Sequence[float]]], path: str, ylabel: str = "objective",
           log: bool = False, suptitle: str = "") -> str:
    """Objective against gradient evaluations: one panel per title, one line per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, histories) in zip(axes.flat, panels.items()):
        for name, h in histories.items():
            ax.plot(np.arange(1, len(h) + 1), h, label=name, lw=1.2)
        ax.set_xlabel("gradient evaluations")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
