"""Masks drawn on pictures, as arrays: class colours, outlines, overlays, error maps, per-image IoU.

Pure numpy (no plotting), so the predictor, the web server and the figures of :mod:`mobileseg.viz` draw masks the
same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from mobileseg.palette import (
    BACKGROUND_COLOR,
    FN_COLOR,
    FP_COLOR,
    IGNORE_COLOR,
    TP_COLOR,
    WRONG_COLOR,
)


def _rgb(c: Sequence[int]) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


def colorize(
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    ignore_color: Sequence[int] = IGNORE_COLOR,
) -> np.ndarray:
    """Class-index map (H, W) -> RGB uint8 (H, W, 3); ignore pixels in ``ignore_color`` (white by default)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_color
    return lut[np.asarray(mask).astype(np.uint8)]


def boundaries(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels (H, W bool) within ``width`` of a change of class: the outline of every region."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    dy = mask[1:] != mask[:-1]
    dx = mask[:, 1:] != mask[:, :-1]
    edge[1:] |= dy
    edge[:-1] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    for _ in range(max(width, 1) - 1):  # grow by one pixel (4-neighbourhood) per step
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
    ignore_index: int = 255,
    *,
    transparent: Iterable[int] | None = None,
    outline: bool = False,
    outline_width: int | None = None,
) -> np.ndarray:
    """Blend class colours over an RGB uint8 image.

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) class indices.
        palette: one RGB per class.
        alpha: opacity of the class colour.
        ignore_index: mask value left unpainted.
        transparent: classes left unpainted; default: classes whose colour is black (a background class).
        outline: draw each painted region's outline in its class colour at full opacity, so a region stays
            visible on an object of the same colour.
        outline_width: outline thickness in pixels; default about 1/150 of the shorter side (at least 1).

    Example:
        >>> img = np.zeros((4, 4, 3), np.uint8); m = np.eye(4, dtype=np.uint8)
        >>> overlay(img, m, [(0, 0, 0), (255, 0, 0)], alpha=1.0)[0, 0].tolist()
        [255, 0, 0]
    """
    mask = np.asarray(mask)
    color = colorize(mask, palette, ignore_index).astype(np.float32)
    out = np.asarray(image).astype(np.float32)
    if transparent is None:
        skip = [i for i, c in enumerate(palette) if tuple(int(v) for v in c) == BACKGROUND_COLOR]
    else:
        skip = list(transparent)
    paint = ~np.isin(mask, [*skip, ignore_index]) & (mask < len(palette))
    out[paint] = (1 - alpha) * out[paint] + alpha * color[paint]
    if outline:
        width = outline_width or max(1, round(min(mask.shape) / 150))
        edge = boundaries(mask, width) & paint
        out[edge] = color[edge]
    return out.clip(0, 255).astype(np.uint8)


def error_map(
    image: np.ndarray, target: np.ndarray, pred: np.ndarray, binary: bool, ignore_index: int = 255
) -> np.ndarray:
    """Right and wrong at a glance, over a dimmed grey copy of the image (RGB uint8).

    Binary: TP green, FP red, FN blue. Multi-class: wrong pixels (pred != truth) red. Ignored pixels white.
    """
    grey = np.asarray(image, dtype=np.float32).mean(-1, keepdims=True)
    out = np.repeat(60 + 0.45 * grey, 3, axis=-1)
    target, pred = np.asarray(target), np.asarray(pred)
    valid = target != ignore_index
    if binary:
        t, p = target != 0, pred != 0
        layers = [(valid & t & p, TP_COLOR), (valid & ~t & p, FP_COLOR), (valid & t & ~p, FN_COLOR)]
    else:
        layers = [(valid & (target != pred), WRONG_COLOR)]
    for where, colour in layers:
        out[where] = 0.2 * out[where] + 0.8 * np.asarray(colour, dtype=np.float32)
    out[~valid] = IGNORE_COLOR
    return out.clip(0, 255).astype(np.uint8)


def image_iou(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """IoU of one image, as the evaluator counts it: foreground IoU for binary, else the mean over classes present
    in truth or prediction; 1.0 when there is nothing in either."""
    target, pred = np.asarray(target), np.asarray(pred)
    valid = target != ignore_index
    t, p = target[valid], pred[valid]
    classes = [1] if num_classes == 2 else range(num_classes)
    ious = []
    for c in classes:
        union = np.count_nonzero((t == c) | (p == c))
        if union:
            ious.append(np.count_nonzero((t == c) & (p == c)) / union)
    return float(np.mean(ious)) if ious else 1.0


def pick_worst(
    scores: Sequence[float], k: int, shown: Iterable[int] = (), split_name: str = "predictions.png"
) -> tuple[list[int], str]:
    """The ``k`` lowest-scoring images not already shown elsewhere, and a note for the figure title.

    On a small split the worst images are often already in the overview figure; a worst-cases figure that repeats
    it wastes the reader's time, so those are skipped and the note says how many were (or, when nothing else is
    left, the overall worst are returned and the note says they repeat ``split_name``). NaN scores sort last.

    Args:
        scores: one score per image (e.g. per-image IoU).
        k: how many to pick.
        shown: indices already drawn in the overview figure.
        split_name: what the overview is called in the note.

    Example:
        >>> pick_worst([0.9, 0.1, 0.5, 0.3], 2, shown=[1])
        ([3, 2], '1 worse image already in predictions.png')
    """
    shown_set = set(shown)
    order = sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), scores[i]))
    fresh = [i for i in order if i not in shown_set][:k]
    if not fresh:
        return order[:k], f"every image is already in {split_name}; these repeat it"
    cutoff = scores[fresh[-1]]
    skipped = sum(1 for i in shown_set if 0 <= i < len(scores) and scores[i] < cutoff)
    note = f"{skipped} worse image{'s' if skipped != 1 else ''} already in {split_name}" if skipped else ""
    return fresh, note


# --------------------------------------------------------------------------------------------------- helpers
