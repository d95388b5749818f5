"""The pieces every figure is drawn with: arrays as panels, row labels, the class legend, the title, saving.

Figures are built without pyplot (``matplotlib.use("Agg")``, :class:`~matplotlib.figure.Figure` directly), so they
are safe in a server thread and need no ``plt.close``. The conventions of :mod:`mobileseg.viz` (a title with the
run name, a legend wherever colours mean classes, panels at the images' own aspect ratio) live here.

Example:
    >>> as_rgb(np.zeros((3, 4, 5), np.float32)).shape  # CHW float -> HWC uint8
    (4, 5, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mobileseg.palette import RGB, legend_entries  # noqa: E402


def rgb(c: Sequence[int]) -> RGB:
    return (int(c[0]), int(c[1]), int(c[2]))


def hex_color(c: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb(c))


def as_rgb(image: Any) -> np.ndarray:
    """HWC uint8 from HWC/CHW, uint8 or float (0..1, 0..255 or normalised), numpy or torch."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3):  # other band counts (channels=N): CHW -> HWC, then
        if arr.shape[0] < arr.shape[-1]:  # the first three bands (or the first, as grey) are what is shown
            arr = arr.transpose(1, 2, 0)
        arr = arr[..., :3] if arr.shape[-1] > 3 else arr[..., :1]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            arr = arr * 255
        elif lo < 0 or hi > 255:  # normalised input: stretch to the visible range
            arr = (arr - lo) / max(hi - lo, 1e-6) * 255
        arr = arr.clip(0, 255).astype(np.uint8)
    return arr


def as_mask(mask: Any) -> np.ndarray:
    return np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)


def class_names(names: Sequence[str] | None, palette: Sequence[Sequence[int]]) -> list[str]:
    return [str(n) for n in names] if names else [f"class {i}" for i in range(len(palette))]


def show(ax: Any, panel: np.ndarray, size: tuple[int, int] | None = None) -> None:
    """Draw a panel at its original (height, width): the array is stretched back by the extent, not resampled."""
    h, w = size if size else panel.shape[:2]
    ax.imshow(panel, extent=(0, w, h, 0), interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.6")


def label_panel(ax: Any, text: str, fontsize: float = 9) -> None:
    """A row label inside the panel's top-left corner, horizontal and on a light box: readable on any image."""
    ax.text(
        0.02,
        0.98,
        text,
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=fontsize,
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 2},
    )


def class_legend(
    fig: Figure,
    names: Sequence[str],
    palette: Sequence[Sequence[int]],
    ignore: bool,
    loc: str = "outside lower center",
    title: str | None = "classes",
    ignore_index: int = 255,
    extra: Sequence[tuple[RGB, str]] = (),
) -> Any:
    """One figure legend: a Patch per class (labelled with its name), ``ignored``, then ``extra`` entries."""
    entries = legend_entries(names, palette, ignore, ignore_index)
    handles = [Patch(facecolor=hex_color(e["color"]), edgecolor="0.3", label=e["name"]) for e in entries]
    handles += [Patch(facecolor=hex_color(c), edgecolor="0.3", label=t) for c, t in extra]
    ncol = min(len(handles), 8)
    return fig.legend(handles=handles, loc=loc, ncol=ncol, fontsize=9, title=title, title_fontsize=9, frameon=False)


def set_title(fig: Figure, title: str | None, what: str, note: str = "") -> None:
    text = f"{title}: {what}" if title else what
    if note:
        text += f"\n{note}"
    fig.suptitle(text, fontsize=12)


def save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
