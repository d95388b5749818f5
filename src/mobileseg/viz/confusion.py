"""The confusion matrix: counts and row shares, log-coloured so rare classes stay visible."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .figure import save, set_title


def _count(v: float) -> str:
    """A pixel count in a few characters: 950, 12.3k, 4.56M."""
    v = float(v)
    if v < 10_000:
        return f"{v:.0f}"
    if v < 1_000_000:
        return f"{v / 1e3:.1f}k"
    if v < 1e9:
        return f"{v / 1e6:.2f}M"
    return f"{v / 1e9:.2f}G"


def _share(v: float, count: float) -> str:
    """A row share for a cell: '0' only for no pixels at all, '<.01' for a few (not the same thing)."""
    if count <= 0:
        return "0"
    return "<.01" if v < 0.005 else f"{v:.2f}"


def figure_confusion_matrix(mat: np.ndarray, names: Sequence[str], *, title: str | None = None) -> Figure:
    """Two panels: pixel counts (log colour) and row-normalised shares (recall per true class).

    Cell texts are sized to the class count so 2 and 12 classes both read well; beyond 20 classes only colours.
    """
    mat = np.asarray(mat, dtype=np.float64)
    n = len(names)
    norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    cell = 1.2 if n <= 3 else 0.62 if n <= 12 else 0.45
    side = max(3.2, cell * n + 1.8)
    fig = Figure(figsize=(2 * side + 1.2, side + 0.4), layout="constrained")
    axes = fig.subplots(1, 2)
    font = 14 if n <= 3 else 9 if n <= 8 else 7.5 if n <= 12 else 6
    positive = mat[mat > 0]
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    counts_norm = LogNorm(vmin=max(lo, 1.0), vmax=max(hi, lo * 10, 10.0))
    panels = [
        (np.ma.masked_less_equal(mat, 0), counts_norm, "pixel counts (log colour)", lambda i, j: _count(mat[i, j])),
        (norm, None, "row-normalised (recall per true class)", lambda i, j: _share(norm[i, j], mat[i, j])),
    ]
    for ax, (values, cnorm, label, fmt) in zip(axes, panels, strict=True):
        im = ax.imshow(values, cmap="Blues", norm=cnorm, vmin=None if cnorm else 0, vmax=None if cnorm else 1)
        ax.set_xticks(range(n), names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label, fontsize=11)
        if n <= 20:
            shade = norm if cnorm is None else counts_norm(np.where(mat > 0, mat, counts_norm.vmin)).filled(0)
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        fmt(i, j),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if shade[i, j] > 0.55 else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    set_title(fig, title, f"confusion matrix, {_count(mat.sum())} pixels")
    return fig


def plot_confusion_matrix(mat: np.ndarray, names: Sequence[str], path: str | Path, *, title: str | None = None) -> Path:
    """Save :func:`figure_confusion_matrix` (counts and row-normalised side by side) as confusion_matrix.png.

    Example:
        >>> plot_confusion_matrix(np.array([[90, 10], [5, 95]]), ["background", "pet"], "/tmp/cm.png")
        PosixPath('/tmp/cm.png')
    """
    return save(figure_confusion_matrix(mat, names, title=title), path, 90)
