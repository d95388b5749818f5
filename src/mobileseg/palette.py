"""Class colours: one RGB triple per class, shared by the figures, the exported metadata and the web page.

A leaf module (numpy and matplotlib's colour tables only), so the model-file metadata can fill in a palette
without importing the plotting code.
"""

from __future__ import annotations

# Distinct, colour-blind-friendly first colours (Okabe-Ito), then tab20 for larger class counts.
_BASE = [
    (0, 0, 0),
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
]


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """One RGB colour per class; class 0 (background) is black so binary masks read naturally.

    Example:
        >>> default_palette(2)
        [(0, 0, 0), (230, 159, 0)]
    """
    if num_classes <= len(_BASE):
        return _BASE[:num_classes]
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    extra = [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(num_classes - len(_BASE))]
    return _BASE + extra  # type: ignore[return-value]


__all__ = ["default_palette"]
