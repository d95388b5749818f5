"""Class colours: one RGB triple per class, shared by the figures, the exported metadata and the web page.

:func:`default_palette` gives classes colours at least 20 CIE76 units apart in CIELAB (checked by
:func:`min_lab_distance`) for up to 20 classes; class 0 is black (and left unpainted in overlays) only when it is
a background class. Ignored (void) pixels are drawn in :data:`IGNORE_COLOR` and named ``ignored`` in legends.
A leaf module (numpy only), so the model-file metadata can fill in a palette without importing the plotting code.

Example:
    >>> pal = default_palette(11)
    >>> len(pal), min_lab_distance(pal) >= MIN_LAB_DISTANCE
    (11, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

RGB = tuple[int, int, int]

IGNORE_COLOR: RGB = (255, 255, 255)  # ignored / void pixels in mask panels; named "ignored" in legends
IGNORE_LABEL = "ignored"
BACKGROUND_COLOR: RGB = (0, 0, 0)  # a background class; overlays leave black classes unpainted
TP_COLOR: RGB = (40, 190, 60)  # binary: foreground found
FP_COLOR: RGB = (235, 35, 35)  # binary: foreground claimed where there is none; multi-class: any wrong pixel
FN_COLOR: RGB = (40, 110, 255)  # binary: foreground missed
WRONG_COLOR: RGB = FP_COLOR
BACKGROUND_NAMES = {"background", "backgrounds", "bg", "_background_", "__background__", "back"}
MIN_LAB_DISTANCE = 20.0  # the distinctness the default palette guarantees for up to 20 classes

# Well-known first colours (matplotlib's tab10 without its grey), then colours picked greedily in CIELAB.
_SEED: list[RGB] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
]


# --------------------------------------------------------------------------------------------------- colour


def srgb_to_lab(rgb: np.ndarray | Sequence[Sequence[int]] | Sequence[int]) -> np.ndarray:
    """sRGB 0..255 colours (..., 3) -> CIELAB (D65 white), the space where distances match what people see.

    Example:
        >>> (srgb_to_lab([255, 255, 255]).round(1) + 0.0).tolist()  # + 0.0: no -0.0
        [100.0, 0.0, 0.0]
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab + 0.0  # no -0.0


def lab_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """CIE76 colour difference (Euclidean distance in CIELAB) of two sRGB colours; ~2.3 is just noticeable."""
    return float(np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b)))


def min_lab_distance(palette: Sequence[Sequence[int]]) -> float:
    """Smallest CIE76 distance between any two colours of ``palette`` (inf for fewer than two)."""
    lab = srgb_to_lab(np.asarray(palette, dtype=np.float64).reshape(-1, 3))
    if len(lab) < 2:
        return math.inf
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(d[np.triu_indices(len(lab), 1)].min())


@lru_cache(maxsize=1)
def _distinct_colors() -> tuple[RGB, ...]:
    """255 colours, each the candidate farthest (in CIELAB) from all before it and from black, white and grey."""
    levels = np.linspace(0, 255, 9).round().astype(int)
    cand = np.array([(r, g, b) for r in levels for g in levels for b in levels])
    lab = srgb_to_lab(cand)
    chosen = list(_SEED)
    reserved = [BACKGROUND_COLOR, IGNORE_COLOR, (128, 128, 128)]
    nearest = np.min(np.linalg.norm(lab[:, None] - srgb_to_lab(chosen + reserved)[None], axis=-1), axis=1)
    while len(chosen) < 255:
        i = int(np.argmax(nearest))
        chosen.append(tuple(int(v) for v in cand[i]))  # type: ignore[arg-type]
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=-1))
        nearest[i] = -1
    return tuple(chosen)


def is_background(name: str) -> bool:
    """Whether a class name means "background" (then it is black and left unpainted in overlays)."""
    return name.strip().lower() in BACKGROUND_NAMES


def default_palette(num_classes: int, names: Sequence[str] | None = None) -> list[RGB]:
    """One RGB colour per class, at least 20 CIELAB units apart for up to 20 classes.

    Class 0 is black only when it is a background class: named so in ``names``, or, without names, when there are
    two classes (binary background/foreground). Otherwise it gets a colour like every other class, so CamVid's
    Sky (class 0) is painted.

    Args:
        num_classes: how many colours.
        names: class names, to tell whether class 0 is a background.

    Example:
        >>> default_palette(2)[0], default_palette(3, ["sky", "road", "car"])[0]
        ((0, 0, 0), (31, 119, 180))
    """
    background = is_background(names[0]) if names else num_classes == 2
    colors = list(_distinct_colors())
    if background:
        return [BACKGROUND_COLOR, *colors[: max(num_classes - 1, 0)]]
    return colors[:num_classes]


def legend_entries(
    names: Sequence[str], palette: Sequence[Sequence[int]], ignore: bool = True, ignore_index: int = 255
) -> list[dict[str, Any]]:
    """The colour key of a mask: one ``{"index", "name", "color"}`` per class, then the ignored colour.

    The web page / server can show exactly what the figures show.

    Args:
        names: class names.
        palette: one RGB per class (extra colours are not listed).
        ignore: add the ``ignored`` entry (index ``ignore_index``, colour :data:`IGNORE_COLOR`).
        ignore_index: the mask value of ignored pixels.

    Example:
        >>> [e["name"] for e in legend_entries(["background", "cat"], default_palette(2))]
        ['background', 'cat', 'ignored']
    """
    out = [
        {"index": i, "name": str(n), "color": _rgb(palette[i]) if i < len(palette) else BACKGROUND_COLOR}
        for i, n in enumerate(names)
    ]
    if ignore:
        out.append({"index": ignore_index, "name": IGNORE_LABEL, "color": IGNORE_COLOR})
    return out


def _rgb(c: Sequence[int]) -> RGB:
    return (int(c[0]), int(c[1]), int(c[2]))
