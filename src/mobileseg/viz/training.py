"""What a training run did: loss and metric curves per epoch, and a batch of augmented training samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mobileseg.overlays import colorize

from .figure import as_mask, as_rgb, class_legend, class_names, save, set_title, show


def figure_results(
    history: list[dict[str, float]],
    *,
    title: str | None = None,
    best_epoch: int | None = None,
    binary: bool | None = None,
    fitness: str = "val/iou",
) -> Figure:
    """Loss and every metric per epoch, train and val, one panel each, with the best epoch marked.

    Args:
        history: one dict per epoch: ``epoch``, ``train/<metric>``, ``val/<metric>``, ``lr``.
        title: the run name, shown in the figure title.
        best_epoch: the epoch of best.pt; default: the epoch with the highest ``fitness``.
        binary: names the IoU/Dice panels "foreground IoU" (True) or "mean IoU" (False); None: "IoU".
        fitness: the history key the best epoch is chosen by when ``best_epoch`` is not given.
    """
    epochs = [row["epoch"] for row in history]
    if best_epoch is None:
        scored = [(row.get(fitness, math.nan), row["epoch"]) for row in history]
        scored = [s for s in scored if not math.isnan(s[0])]
        best_epoch = max(scored)[1] if scored else None
    kind = "" if binary is None else ("foreground " if binary else "mean ")
    panels = [
        ("loss", "loss"),
        ("accuracy", "pixel accuracy"),
        ("precision", f"{kind}precision".strip()),
        ("recall", f"{kind}recall".strip()),
        ("iou", f"{kind}IoU".strip()),
        ("dice", f"{kind}Dice".strip()),
        ("lr", "learning rate"),
    ]
    fig = Figure(figsize=(16, 7.5), layout="constrained")
    axes = fig.subplots(2, 4)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        series = [("lr", "-", "lr")] if key == "lr" else [("train/" + key, "-o", "train"), ("val/" + key, "-s", "val")]
        drawn = False
        for name, style, legend in series:
            values = [row.get(name, math.nan) for row in history]
            if any(not math.isnan(v) for v in values):
                ax.plot(epochs, values, style, markersize=4, label=legend)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
            row = next((r for r in history if r["epoch"] == best_epoch), None)
            value = row.get("val/" + key, math.nan) if row is not None else math.nan
            if not math.isnan(value):
                ax.plot([best_epoch], [value], "*", color="tab:green", markersize=14, zorder=5)
                ax.annotate(f"{value:.3g}", (best_epoch, value), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.25, max(epochs) + 0.25)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[-1].axis("off")
    set_title(fig, title, "training curves" + (f" (best epoch {best_epoch})" if best_epoch is not None else ""))
    return fig


def plot_results(
    history: list[dict[str, float]],
    path: str | Path,
    *,
    title: str | None = None,
    best_epoch: int | None = None,
    binary: bool | None = None,
) -> Path:
    """Save :func:`figure_results` as results.png.

    Example:
        >>> plot_results([{"epoch": 1, "train/loss": 0.5, "val/iou": 0.4}], "/tmp/r.png", title="exp")
        PosixPath('/tmp/r.png')
    """
    return save(figure_results(history, title=title, best_epoch=best_epoch, binary=binary), path, 90)


def figure_train_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    palette: Sequence[Sequence[int]],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    ignore_index: int = 255,
    max_images: int = 16,
    per_row: int = 4,
) -> Figure:
    """What the model is trained on: augmented inputs, each beside its mask, with the class legend.

    Args:
        images: a batch as the loader gives it (CHW float 0..1 tensors or HWC uint8 arrays).
        masks: (H, W) class indices (ignore pixels included).
        palette: one RGB per class.
        names: class names for the legend.
        title: the run name.
        ignore_index: mask value of ignored pixels.
        max_images: at most this many samples are drawn.
        per_row: samples (image + mask pairs) per row.
    """
    names = class_names(names, palette)
    count = min(len(images), max_images)
    rows = max(1, math.ceil(count / per_row))
    cols = min(count, per_row) if count else 1
    imgs = [as_rgb(images[i]) for i in range(count)]
    msks = [as_mask(masks[i]) for i in range(count)]
    ratio = max((im.shape[0] / im.shape[1] for im in imgs), default=1.0)
    fig = Figure(figsize=(2 * 2.2 * cols, 2.2 * ratio * rows + 1.4 + 0.25 * math.ceil(len(names) / 8)))
    fig.set_layout_engine("constrained", h_pad=0.02, w_pad=0.02, hspace=0.01, wspace=0.01)
    subs = np.atleast_2d(fig.subfigures(rows, cols, wspace=0.02, hspace=0.02))
    has_ignore = False
    for i in range(count):
        sub = subs[i // per_row, i % per_row]
        sub.set_facecolor("0.93")  # a shaded card per sample: which mask belongs to which image is obvious
        a_img, a_mask = sub.subplots(1, 2)
        show(a_img, imgs[i])
        show(a_mask, colorize(msks[i], palette, ignore_index))
        sub.suptitle(f"#{i}", fontsize=9)
        has_ignore |= bool((msks[i] == ignore_index).any())
    class_legend(fig, names, palette, has_ignore, ignore_index=ignore_index)
    set_title(fig, title, f"training batch (augmented), {count} of {len(images)} samples: image | mask")
    return fig


def plot_train_batch(
    images: Sequence[Any],
    masks: Sequence[Any],
    path: str | Path,
    palette: Sequence[Sequence[int]],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    ignore_index: int = 255,
    max_images: int = 16,
) -> Path:
    """Save :func:`figure_train_batch` (train_batch0.png): check the augmentation before trusting a run.

    Example:
        >>> from mobileseg.palette import default_palette
        >>> imgs = np.zeros((2, 3, 32, 32), np.float32); ms = np.zeros((2, 32, 32), np.uint8)
        >>> plot_train_batch(imgs, ms, "/tmp/b.png", default_palette(2), ["background", "pet"])
        PosixPath('/tmp/b.png')
    """
    fig = figure_train_batch(
        images, masks, palette, names, title=title, ignore_index=ignore_index, max_images=max_images
    )
    return save(fig, path, 80)
