"""Pictures of what a model does: metric curves, prediction grids, overlays, confusion matrices.

All functions take plain numpy arrays / lists and write PNG files with matplotlib's Agg backend, so they work on
a headless machine and never touch the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

IGNORE_COLOR = (0, 0, 0)


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """Class-index map (H, W) -> RGB uint8 (H, W, 3); ignore pixels are drawn white."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    if 0 <= ignore_index < 256:
        lut[ignore_index] = (255, 255, 255)
    return lut[mask.astype(np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int = 255,
) -> np.ndarray:
    """Blend class colours over an RGB uint8 image; background (class 0) and ignore pixels stay untouched."""
    color = colorize(mask, palette, ignore_index).astype(np.float32)
    out = image.astype(np.float32)
    paint = (mask != 0) & (mask != ignore_index)
    out[paint] = (1 - alpha) * out[paint] + alpha * color[paint]
    return out.clip(0, 255).astype(np.uint8)


def plot_results(history: list[dict[str, float]], path: str | Path) -> Path:
    """Curves of the loss and every metric per epoch, train and val, one panel each (results.png)."""
    path = Path(path)
    epochs = [row["epoch"] for row in history]
    panels = ["loss", "accuracy", "precision", "recall", "iou", "dice", "lr"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, name in zip(axes.flat, panels, strict=False):
        for prefix, style in (("train/", "-o"), ("val/", "-s")):
            values = [row.get(prefix + name, math.nan) for row in history]
            if any(not math.isnan(v) for v in values):
                ax.plot(epochs, values, style, markersize=3, label=prefix.rstrip("/"))
        if name == "lr":
            ax.plot(epochs, [row.get("lr", math.nan) for row in history], "-", label="lr")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray | None],
    preds: Sequence[np.ndarray],
    path: str | Path,
    palette: Sequence[Sequence[int]],
    titles: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> Path:
    """A row per sample: image | ground truth | prediction | overlay (of the prediction)."""
    path = Path(path)
    n = len(images)
    cols = ["image", "ground truth", "prediction", "overlay"]
    fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
    for r in range(n):
        target = targets[r]
        panels = [
            images[r],
            colorize(target, palette, ignore_index) if target is not None else np.zeros_like(images[r]),
            colorize(preds[r], palette, ignore_index),
            overlay(images[r], preds[r], palette, ignore_index=ignore_index),
        ]
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
        if titles:
            axes[r, 0].set_ylabel(titles[r], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_confusion_matrix(mat: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix (recall per true class) with the raw share in each cell."""
    path = Path(path)
    mat = np.asarray(mat, dtype=np.float64)
    norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * n + 2), max(3.5, 0.7 * n + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 16:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
