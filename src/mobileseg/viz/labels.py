"""Class pixel shares per split: spot a missing or rare class before training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from mobileseg.palette import (
    BACKGROUND_COLOR,
    FP_COLOR,
    IGNORE_COLOR,
    IGNORE_LABEL,
    RGB,
    srgb_to_lab,
)

from .figure import class_legend, hex_color, rgb, save, set_title


def figure_label_distribution(
    shares_per_split: Mapping[str, Mapping[Any, float]],
    palette: Sequence[Sequence[int]],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Class pixel shares per split: stacked bars (colours = classes, legend) and a log-scale comparison.

    Args:
        shares_per_split: ``{split: {class name or index: share}}``; shares are fractions of the split's labelled
            pixels (they need not sum to 1; an ``"ignored"`` key is drawn in the ignored colour).
        palette: one RGB per class, in ``names`` order.
        names: the class order; default: the keys in first-seen order.
        title: the run name.
    """
    splits = list(shares_per_split)
    if names is None:
        seen: dict[str, None] = {}
        for shares in shares_per_split.values():
            seen.update(dict.fromkeys(str(k) for k in shares if str(k) != IGNORE_LABEL))
        names = list(seen)
    names = [str(x) for x in names]
    has_ignore = any(IGNORE_LABEL in map(str, s) for s in shares_per_split.values())
    keys = names + ([IGNORE_LABEL] if has_ignore else [])
    colors = [rgb(palette[i]) if i < len(palette) else BACKGROUND_COLOR for i in range(len(names))]
    colors += [IGNORE_COLOR] if has_ignore else []

    def share(split: str, k: int) -> float:
        d = shares_per_split[split]
        for key in (keys[k], k):
            if key in d:
                return float(d[key])
        return 0.0

    table = np.array([[share(s, k) for k in range(len(keys))] for s in splits]).reshape(len(splits), len(keys))
    fig = Figure(figsize=(13, max(3.5, 0.8 * len(splits) + 1.5, 0.3 * len(keys) + 1.6)), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    _stacked_shares(left, splits, table, colors)
    _log_shares(right, splits, keys, table)
    class_legend(fig, names, palette, has_ignore)
    set_title(fig, title, "label distribution")
    return fig


def _stacked_shares(left: Any, splits: list[str], table: np.ndarray, colors: list[RGB]) -> None:
    """One stacked bar per split: each class's share in its colour, labelled with its percentage when >= 5 %."""
    for k in range(table.shape[1]):
        base = table[:, :k].sum(1)
        left.barh(splits, table[:, k], left=base, color=hex_color(colors[k]), edgecolor="0.3", linewidth=0.5)
        for s in range(len(splits)):
            if table[s, k] >= 0.05:
                dark = srgb_to_lab(colors[k])[0] < 55
                left.text(
                    base[s] + table[s, k] / 2,
                    s,
                    f"{100 * table[s, k]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    left.invert_yaxis()
    left.set_xlim(0, max(1.0, float(table.sum(1).max(initial=0))))
    left.set_xlabel("share of pixels")
    left.set_title("class shares per split", fontsize=11)
    left.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))


def _log_shares(right: Any, splits: list[str], keys: list[str], table: np.ndarray) -> None:
    """Per class, the splits' shares side by side on a log scale (greys), a class missing from a split named."""
    height = 0.8 / max(len(splits), 1)
    y = np.arange(len(keys))
    positive = table[table > 0]
    floor = float(positive.min()) / 3 if positive.size else 1e-4
    greys = ["0.2", "0.5", "0.78", "0.35", "0.65", "0.9"]  # splits in greys: colours here would read as classes
    for s, split in enumerate(splits):
        ys = y + s * height
        right.barh(
            ys,
            np.maximum(table[s] - floor, 0),
            height,
            left=floor,
            label=split,
            color=greys[s % 6],
            edgecolor="0.2",
            linewidth=0.4,
        )
        for k in np.flatnonzero(table[s] <= 0):  # a class missing from a split is worth shouting about
            right.text(floor, ys[k], f" none in {split}", va="center", ha="left", fontsize=7, color=hex_color(FP_COLOR))
    right.set_yticks(y + height * (len(splits) - 1) / 2, keys)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlim(left=floor)
    right.set_xlabel("share of pixels (log)")
    right.set_title("per class, splits side by side", fontsize=11)
    right.legend(title="split", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    right.grid(axis="x", alpha=0.3)


def plot_label_distribution(
    shares_per_split: Mapping[str, Mapping[Any, float]],
    path: str | Path,
    palette: Sequence[Sequence[int]],
    names: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Save :func:`figure_label_distribution` as labels.png: spot a missing or rare class before training.

    Example:
        >>> from mobileseg.palette import default_palette
        >>> shares = {"train": {"background": 0.7, "pet": 0.3}, "val": {"background": 0.75, "pet": 0.25}}
        >>> plot_label_distribution(shares, "/tmp/labels.png", default_palette(2))
        PosixPath('/tmp/labels.png')
    """
    return save(figure_label_distribution(shares_per_split, palette, names, title=title), path, 90)
