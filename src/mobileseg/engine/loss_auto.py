"""``auto`` in the loss settings: the loss and the class weights chosen from the train split's pixel counts.

:func:`count_class_pixels` counts the labelled pixels per class; :func:`choose_loss` picks ``loss=auto``
(cross-entropy, plus Dice when a class is rare) and :func:`auto_class_weights` the weights for
``class_weights=auto`` / ``pos_weight=auto``. :func:`mobileseg.engine.loss.build_loss` applies them; this module
holds the rules and their thresholds, and needs nothing but numpy.

Example:
    >>> choose_loss([0.5, 0.5], binary=True)
    ('bce', 'foreground is 50.0 % of train pixels (not rare)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Automatic loss choice (choose_loss). A binary task whose foreground covers less than this share of the labelled
# train pixels gets a Dice term added to BCE; so does a multi-class task whose rarest present class is below its
# threshold. Above them the loss stays the plain cross-entropy that balanced data trains well with.
# Both lines are measured (README, thin structures; CamVid at 256x352, 8 epochs, one seed per cell). Binary (classes
# against the rest): the rare branch gained +0.159 IoU at 1 % foreground, +0.073 at 4.7 %, +0.022 at 6.1 %, and
# nothing at 10.1 %. Multi-class (CamVid with classes merged so that the rarest sits at 0.3 %, 0.97 %, 1.2 % and
# 4.4 %): Dice gained +0.022, +0.059, +0.054 and +0.010 test mIoU; the old 1 % line gave plain cross-entropy to the
# 1.2 % task, whose rare classes then stayed near 0 IoU (0.02 / 0.08 against 0.22 / 0.23). So the multi-class line
# is the binary one: no measurement put it lower, and above 10 % the binary gain had run out.
AUTO_BINARY_RARE_SHARE = 0.10
AUTO_MULTICLASS_RARE_SHARE = 0.10
AUTO_DICE_WEIGHT = 1.0

# Automatic class weights (auto_class_weights): inverse square-root frequency, clipped to this range.
AUTO_WEIGHT_MIN = 0.1
AUTO_WEIGHT_MAX = 10.0


def auto_class_weights(pixel_counts: Sequence[int] | np.ndarray, binary: bool) -> np.ndarray:
    """Class weights from the train split's pixel counts: inverse square-root frequency, bounded.

    The rule, for the shares ``f_c`` of the labelled pixels:

    * multi-class: ``w_c = sqrt(median(f) / f_c)`` over the classes that have pixels (the median class gets 1,
      a class 100x rarer than it gets 10), clipped to ``[AUTO_WEIGHT_MIN, AUTO_WEIGHT_MAX]`` = [0.1, 10]; a class
      with no pixels gets 1 (it never appears as a target, so its weight does not matter).
    * binary: background keeps weight 1 and foreground gets ``sqrt(n_background / n_foreground)`` clipped the same
      way (this is BCE's ``pos_weight``); 1 when either class has no pixels.

    The square root (rather than plain inverse frequency) keeps a 1 %-foreground task from being pushed into
    predicting foreground everywhere; the clip bounds the damage of a class that is almost absent.

    Args:
        pixel_counts: labelled pixels per class (length = number of classes; 2 for a binary task).
        binary: the model has one logit (background/foreground).

    Returns:
        float64 weights per class (length = ``len(pixel_counts)``); for binary ``[1, pos_weight]``.

    Example:
        >>> auto_class_weights([900, 100], binary=True).tolist()
        [1.0, 3.0]
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any():
        raise ValueError(f"pixel_counts must be >= 0 per class, at least 2 classes (got {counts.tolist()})")
    if binary:
        if counts.size != 2:
            raise ValueError(f"a binary task has 2 pixel counts (background, foreground), got {counts.size}")
        bg, fg = counts
        pos = math.sqrt(bg / fg) if bg > 0 and fg > 0 else 1.0
        return np.array([1.0, float(np.clip(pos, AUTO_WEIGHT_MIN, AUTO_WEIGHT_MAX))])
    weights = np.ones_like(counts)
    present = counts > 0
    if present.any():
        shares = counts[present] / counts.sum()
        weights[present] = np.clip(np.sqrt(np.median(shares) / shares), AUTO_WEIGHT_MIN, AUTO_WEIGHT_MAX)
    return weights


def _pct(share: float) -> str:
    return f"{share * 100:.2g} %" if share < 0.01 else f"{share * 100:.1f} %"


def choose_loss(class_shares: Sequence[float] | np.ndarray | Mapping[str, float], binary: bool) -> tuple[str, str]:
    """Pick the loss for ``loss=auto`` from the train split's class shares, and say why.

    The rule keeps today's plain cross-entropy for data that is not badly imbalanced, and adds a Dice term
    (weight ``AUTO_DICE_WEIGHT``) when a class is rare: Dice scores each class's overlap on its own, so a small
    class is not drowned by the pixel count of the large ones.

    * binary: ``bce+dice`` when the foreground share is below ``AUTO_BINARY_RARE_SHARE`` (10 %), else ``bce``.
    * multi-class: ``ce+dice`` when the rarest class that has pixels is below ``AUTO_MULTICLASS_RARE_SHARE``
      (10 %), else ``ce``. Classes without any pixel are left out (they cannot be learnt from this split anyway).

    Args:
        class_shares: share of labelled train pixels per class (index order, background first), or a
            ``{name: share}`` mapping such as :attr:`mobileseg.data.DataReport.class_share` (the reason then names
            the class). Counts work as well: they are normalised here.
        binary: the model has one logit; the foreground is class 1.

    Returns:
        ``(spec, reason)``, e.g. ``('bce+dice', 'foreground is 1.2 % of train pixels')``.

    Example:
        >>> choose_loss([0.988, 0.012], binary=True)
        ('bce+dice', 'foreground is 1.2 % of train pixels')
    """
    names = [str(k) for k in class_shares] if isinstance(class_shares, Mapping) else None
    values = list(class_shares.values()) if isinstance(class_shares, Mapping) else list(class_shares)
    shares = np.asarray(values, dtype=np.float64)
    total = shares.sum()
    xent = "bce" if binary else "ce"
    if shares.size < 2 or not total > 0:
        return xent, "no labelled train pixels to measure"
    shares = shares / total
    dice = "dice" if AUTO_DICE_WEIGHT == 1 else f"dice:{AUTO_DICE_WEIGHT:g}"
    if binary:
        fg = float(shares[1])
        if fg < AUTO_BINARY_RARE_SHARE:
            return f"{xent}+{dice}", f"foreground is {_pct(fg)} of train pixels"
        return xent, f"foreground is {_pct(fg)} of train pixels (not rare)"
    present = np.flatnonzero(shares > 0)
    rarest = int(present[np.argmin(shares[present])])
    label = f"'{names[rarest]}'" if names else str(rarest)
    share = float(shares[rarest])
    if share < AUTO_MULTICLASS_RARE_SHARE:
        return f"{xent}+{dice}", f"rarest class {label} is {_pct(share)} of train pixels"
    return xent, f"rarest class {label} is {_pct(share)} of train pixels (not rare)"


def count_class_pixels(dataset: Any) -> np.ndarray:
    """Labelled pixels per class over one split, from the dataset's encoded masks at model size.

    Reads ``dataset.load(i)`` (the cached, un-augmented uint8 class-index masks), so with ``cache='ram'`` or
    ``'disk'`` this also fills the cache that training reads next. ``ignore_index`` pixels are not counted.

    Args:
        dataset: a :class:`mobileseg.data.SegmentationDataset` (anything with ``len``, ``load(i) -> (img, mask)``
            and ``spec.names`` / ``spec.ignore_index``).

    Returns:
        int64 counts, one per class (2 for a binary task: background, foreground).

    Example:
        >>> counts = count_class_pixels(SegmentationDataset(spec, "train", (224, 224)))  # doctest: +SKIP
    """
    num_classes = len(dataset.spec.names)
    ignore = int(dataset.spec.ignore_index)
    total = np.zeros(256, dtype=np.int64)
    for i in range(len(dataset)):
        mask = np.asarray(dataset.load(i)[1], dtype=np.uint8)
        total += np.bincount(mask.ravel(), minlength=256)
    if 0 <= ignore < 256:
        total[ignore] = 0
    return total[:num_classes].copy()
