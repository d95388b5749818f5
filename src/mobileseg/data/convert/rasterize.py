"""Annotation geometry -> pixels: polygons and COCO RLE as bool masks, the same with or without pycocotools.

Polygons are rasterised with pycocotools when it is installed (COCO's own definition of a polygon's pixels);
without it a numpy scanline fill with the same pixel convention is used (a pixel belongs to a polygon when its
centre is inside). Compressed COCO RLE needs pycocotools; uncompressed RLE is decoded here either way.

Example:
    >>> int(polygon_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8).sum())  # a 4 x 3 rectangle
    12
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..loading import DataError

try:  # optional: COCO's reference rasteriser and RLE codec
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    _coco_mask = None


def _scanline_fill(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Even-odd polygon fill: pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is.

    A centre exactly on the polygon's left/top edge is out and on its right/bottom edge is in, which is what
    pycocotools does for axis-aligned edges at half-pixel positions.
    """
    out = np.zeros((height, width), dtype=bool)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(height) + 0.5
    ys = rows[:, None]
    # Half-open rule on y (min < y <= max) counts a vertex shared by two edges once.
    crosses = (np.minimum(y0, y1)[None] < ys) & (ys <= np.maximum(y0, y1)[None])
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0[None] + (ys - y0[None]) * (x1 - x0)[None] / (y1 - y0)[None]
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    for r in np.flatnonzero(crosses.any(axis=1)):
        hits = xs[r][np.isfinite(xs[r])]
        for a, b in zip(hits[0::2], hits[1::2], strict=False):
            # columns whose centre c + 0.5 lies in (a, b]
            start = max(0, int(np.floor(a - 0.5)) + 1)
            stop = min(width, int(np.floor(b - 0.5)) + 1)
            if stop > start:
                out[r, start:stop] = True
    return out


def _coco_decode(rle: Any) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools 2.0.x warns about numpy 2's copy keyword on every decode
        warnings.simplefilter("ignore", DeprecationWarning)
        return _coco_mask.decode(rle).astype(bool)


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union of polygons (each a flat ``[x1, y1, x2, y2, ...]`` list in pixel coordinates) as an HxW bool mask.

    Args:
        polygons: flat coordinate lists, at least 3 points each (the caller checks and names the file).
        height: mask height.
        width: mask width.

    Example:
        >>> int(polygon_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8).sum())  # a 4 x 3 rectangle
        12
    """
    if _coco_mask is not None:
        rles = _coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
        return _coco_decode(_coco_mask.merge(rles))
    out = np.zeros((height, width), dtype=bool)
    for p in polygons:
        out |= _scanline_fill(np.asarray(p, dtype=np.float64).reshape(-1, 2), height, width)
    return out


def rle_mask(rle: dict[str, Any], height: int, width: int, where: str) -> np.ndarray:
    """COCO RLE (uncompressed ``counts`` list or compressed string) -> HxW bool mask."""
    size = rle.get("size")
    if size is not None and [int(s) for s in size] != [height, width]:
        raise DataError(f"{where}: RLE size {size} differs from the image's {height}x{width}")
    counts = rle.get("counts")
    if _coco_mask is not None:
        if isinstance(counts, list):
            rle = _coco_mask.frPyObjects(rle, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode()}
        try:
            return _coco_decode(rle)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: cannot decode the RLE ({e})") from None
    if isinstance(counts, str | bytes):
        raise DataError(f"{where}: compressed RLE needs pycocotools (pip install 'mobileseg[convert]')")
    if not isinstance(counts, list):
        raise DataError(f"{where}: RLE 'counts' must be a list or a string")
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False  # runs alternate 0, 1, 0, ... in column-major order, starting with zeros
    for n in counts:
        if value:
            flat[pos : pos + int(n)] = True
        pos, value = pos + int(n), not value
    return flat.reshape(width, height).T
