"""Predictions beside the truth: a row per image with the overlay and a right-and-wrong map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mobileseg.overlays import colorize, error_map, image_iou, overlay
from mobileseg.palette import (
    FN_COLOR,
    FP_COLOR,
    TP_COLOR,
    WRONG_COLOR,
)

from .figure import as_mask, as_rgb, class_legend, class_names, label_panel, save, set_title, show


@dataclass(frozen=True)
class _Row:
    """One sample of the grid: the arrays (already HWC uint8 / class indices), its drawn shape, label and IoU."""

    image: np.ndarray
    target: np.ndarray | None
    pred: np.ndarray
    shape: tuple[int, int]
    label: str
    iou: float | None


def _draw_row(
    axes: Any,
    row: _Row,
    headers: list[str] | None,
    palette: Sequence[Sequence[int]],
    ignore_index: int,
    binary: bool,
    num_classes: int,
) -> bool:
    """Draw one row's five panels (with the column headers on the first row); True when it has ignored pixels."""
    target, pred, image = row.target, row.pred, row.image
    blank = np.full_like(image, 235)
    panels = [
        image,
        colorize(target, palette, ignore_index) if target is not None else blank,
        colorize(pred, palette, ignore_index),
        overlay(image, pred, palette, ignore_index=ignore_index, outline=True),
        error_map(image, target, pred, binary, ignore_index) if target is not None else blank,
    ]
    for c, panel in enumerate(panels):
        show(axes[c], panel, row.shape)
        if headers:
            axes[c].set_title(headers[c], fontsize=11)
    label = row.label
    if target is not None and "iou" not in label.lower():
        iou = row.iou if row.iou is not None else image_iou(target, pred, num_classes, ignore_index)
        label = f"{label}  IoU {iou:.2f}".strip()
    if label:
        label_panel(axes[0], label, 10)
    if target is None:
        label_panel(axes[1], "no mask")
        label_panel(axes[4], "no mask")
    return target is not None and bool((target == ignore_index).any())


def figure_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray | None],
    preds: Sequence[np.ndarray],
    palette: Sequence[Sequence[int]],
    titles: Sequence[str] | None = None,
    ignore_index: int = 255,
    *,
    names: Sequence[str] | None = None,
    sizes: Sequence[tuple[int, int] | None] | None = None,
    title: str | None = None,
    note: str = "",
    ious: Sequence[float] | None = None,
) -> Figure:
    """A row per sample: image | ground truth | prediction | overlay with outlines | right-and-wrong map.

    The last panel is TP/FP/FN for binary and wrong pixels for multi-class; each row is labelled with its title
    and per-image IoU (skipped when the title already says IoU); a legend names the class colours.

    Args:
        images: (H, W, 3) uint8 (or CHW / float, converted).
        targets: (H, W) truth per image, or None for an unlabelled image.
        preds: (H, W) predicted class indices.
        palette: one RGB per class.
        titles: a label per row (e.g. the file stem).
        ignore_index: the truth value of ignored pixels.
        names: class names for the legend; binary when there are two (default: from the palette length).
        sizes: original (height, width) per image: panels are drawn at that aspect ratio (the arrays were resized
            to the square model input); None keeps the arrays' own shape.
        title: the run name (and split) for the figure title.
        note: a second title line (e.g. from :func:`pick_worst`).
        ious: per-image IoU to print instead of computing it.
    """
    names = class_names(names, palette)
    binary = len(names) == 2
    n = len(images)
    images = [as_rgb(im) for im in images]
    preds = [as_mask(p) for p in preds]
    targets = [None if t is None else as_mask(t) for t in targets]
    shapes = [(sizes[r] if sizes and sizes[r] else images[r].shape[:2]) for r in range(n)]
    cols = ["image", "ground truth", "prediction", "overlay + outlines", "TP / FP / FN" if binary else "errors"]
    col_w = 2.8
    ratios = [h / w for h, w in shapes] or [1.0]
    fig = Figure(figsize=(col_w * len(cols), col_w * sum(ratios) + 1.6 + 0.25 * math.ceil(len(names) / 8)))
    fig.set_layout_engine("constrained", h_pad=0.02, w_pad=0.02, hspace=0.01, wspace=0.01)
    axes = fig.subplots(max(n, 1), len(cols), squeeze=False, gridspec_kw={"height_ratios": ratios})
    has_ignore = False
    for r in range(n):
        label = titles[r] if titles and r < len(titles) else ""
        iou = ious[r] if ious is not None else None
        row = _Row(images[r], targets[r], preds[r], shapes[r], label, iou)
        has_ignore |= _draw_row(axes[r], row, cols if r == 0 else None, palette, ignore_index, binary, len(names))
    err = (
        [(TP_COLOR, "TP: found"), (FP_COLOR, "FP: false alarm"), (FN_COLOR, "FN: missed")]
        if binary
        else [(WRONG_COLOR, "wrong class")]
    )
    legend_title = "classes; last column: " + (
        "foreground found / false alarm / missed" if binary else "pixels where prediction != truth"
    )
    class_legend(fig, names, palette, has_ignore, title=legend_title, ignore_index=ignore_index, extra=err)
    set_title(fig, title, "predictions", note)
    return fig


def plot_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray | None],
    preds: Sequence[np.ndarray],
    path: str | Path,
    palette: Sequence[Sequence[int]],
    *args: Any,
    **kwargs: Any,
) -> Path:
    """Save :func:`figure_prediction_grid` (predictions.png, worst.png, val_predictions.png).

    Takes :func:`figure_prediction_grid`'s arguments with ``path`` after ``preds``; the rest (``titles``,
    ``ignore_index``, then keyword-only ``names``, ``sizes``, ``title``, ``note``, ``ious``) are passed through.

    Example:
        >>> from mobileseg.palette import default_palette
        >>> img = np.zeros((32, 48, 3), np.uint8); m = np.zeros((32, 48), np.uint8)
        >>> plot_prediction_grid([img], [m], [m], "/tmp/p.png", default_palette(2), ["a"], names=["bg", "cat"])
        PosixPath('/tmp/p.png')
    """
    return save(figure_prediction_grid(images, targets, preds, palette, *args, **kwargs), path, 80)
