"""Pictures of what a model does: metric curves, prediction grids, overlays, confusion matrices, label shares.

All functions take plain numpy arrays / lists and never touch the model. Each figure has a ``figure_*`` builder
that returns a matplotlib :class:`~matplotlib.figure.Figure` (made without pyplot, so it is safe in a server
thread and needs no ``plt.close``) and a thin ``plot_*`` that saves it as a PNG and returns the path.

Conventions every figure follows, so a person can read it without knowing the code:

* a title carrying the run name (``title=``);
* a legend wherever colours mean classes (:func:`legend_entries` gives the same entries to the web page);
* panels keep each image's aspect ratio: pass the original ``(height, width)`` per image as ``sizes=`` when the
  arrays were resized to the square model input, and the panels are drawn at the original shape;
* right and wrong are visible at a glance: TP/FP/FN colours for binary, a wrong-pixel layer for multi-class,
  outlines of predicted regions on overlays and the per-image IoU on each row.

Colours: :func:`default_palette` gives classes colours at least 20 CIE76 units apart in CIELAB (checked by
:func:`min_lab_distance`) for up to 20 classes; class 0 is black (and left unpainted in overlays) only when it is
a background class. Ignored (void) pixels are drawn in :data:`IGNORE_COLOR` and named ``ignored`` in legends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mobileseg.overlays import (  # noqa: E402  (re-exported: the figures' building blocks)
    boundaries,
    colorize,
    error_map,
    image_iou,
    overlay,
    pick_worst,
)
from mobileseg.palette import (  # noqa: E402
    BACKGROUND_COLOR,
    FN_COLOR,
    FP_COLOR,
    IGNORE_COLOR,
    IGNORE_LABEL,
    MIN_LAB_DISTANCE,
    RGB,
    TP_COLOR,
    WRONG_COLOR,
    default_palette,
    is_background,
    lab_distance,
    legend_entries,
    min_lab_distance,
    srgb_to_lab,
)

__all__ = [
    "IGNORE_COLOR",
    "MIN_LAB_DISTANCE",
    "boundaries",
    "colorize",
    "default_palette",
    "error_map",
    "image_iou",
    "is_background",
    "lab_distance",
    "legend_entries",
    "min_lab_distance",
    "overlay",
    "pick_worst",
    "plot_confusion_matrix",
    "plot_label_distribution",
    "plot_prediction_grid",
    "plot_results",
    "plot_train_batch",
]


def _rgb(c: Sequence[int]) -> RGB:
    return (int(c[0]), int(c[1]), int(c[2]))


def _hex(c: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*_rgb(c))


def _as_rgb(image: Any) -> np.ndarray:
    """HWC uint8 from HWC/CHW, uint8 or float (0..1, 0..255 or normalised), numpy or torch."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
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


def _as_mask(mask: Any) -> np.ndarray:
    return np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)


def _class_names(names: Sequence[str] | None, palette: Sequence[Sequence[int]]) -> list[str]:
    return [str(n) for n in names] if names else [f"class {i}" for i in range(len(palette))]


def _show(ax: Any, panel: np.ndarray, size: tuple[int, int] | None = None) -> None:
    """Draw a panel at its original (height, width): the array is stretched back by the extent, not resampled."""
    h, w = size if size else panel.shape[:2]
    ax.imshow(panel, extent=(0, w, h, 0), interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("0.6")


def _label(ax: Any, text: str, fontsize: float = 9) -> None:
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


def _class_legend(
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
    handles = [Patch(facecolor=_hex(e["color"]), edgecolor="0.3", label=e["name"]) for e in entries]
    handles += [Patch(facecolor=_hex(c), edgecolor="0.3", label=t) for c, t in extra]
    ncol = min(len(handles), 8)
    return fig.legend(handles=handles, loc=loc, ncol=ncol, fontsize=9, title=title, title_fontsize=9, frameon=False)


def _title(fig: Figure, title: str | None, what: str, note: str = "") -> None:
    text = f"{title}: {what}" if title else what
    if note:
        text += f"\n{note}"
    fig.suptitle(text, fontsize=12)


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# --------------------------------------------------------------------------------------------------- results


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
    _title(fig, title, "training curves" + (f" (best epoch {best_epoch})" if best_epoch is not None else ""))
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
    return _save(figure_results(history, title=title, best_epoch=best_epoch, binary=binary), path, 90)


# --------------------------------------------------------------------------------------------------- predictions


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
    names = _class_names(names, palette)
    binary = len(names) == 2
    n = len(images)
    images = [_as_rgb(im) for im in images]
    preds = [_as_mask(p) for p in preds]
    targets = [None if t is None else _as_mask(t) for t in targets]
    shapes = [(sizes[r] if sizes and sizes[r] else images[r].shape[:2]) for r in range(n)]
    cols = ["image", "ground truth", "prediction", "overlay + outlines", "TP / FP / FN" if binary else "errors"]
    col_w = 2.8
    ratios = [h / w for h, w in shapes] or [1.0]
    fig = Figure(figsize=(col_w * len(cols), col_w * sum(ratios) + 1.6 + 0.25 * math.ceil(len(names) / 8)))
    fig.set_layout_engine("constrained", h_pad=0.02, w_pad=0.02, hspace=0.01, wspace=0.01)
    axes = fig.subplots(max(n, 1), len(cols), squeeze=False, gridspec_kw={"height_ratios": ratios})
    has_ignore = False
    for r in range(n):
        target, pred, image = targets[r], preds[r], images[r]
        blank = np.full_like(image, 235)
        if target is not None:
            has_ignore |= bool((target == ignore_index).any())
        panels = [
            image,
            colorize(target, palette, ignore_index) if target is not None else blank,
            colorize(pred, palette, ignore_index),
            overlay(image, pred, palette, ignore_index=ignore_index, outline=True),
            error_map(image, target, pred, binary, ignore_index) if target is not None else blank,
        ]
        for c, panel in enumerate(panels):
            _show(axes[r, c], panel, shapes[r])
            if r == 0:
                axes[r, c].set_title(cols[c], fontsize=11)
        label = titles[r] if titles and r < len(titles) else ""
        if target is not None and "iou" not in label.lower():
            iou = ious[r] if ious is not None else image_iou(target, pred, len(names), ignore_index)
            label = f"{label}  IoU {iou:.2f}".strip()
        if label:
            _label(axes[r, 0], label, 10)
        if target is None:
            _label(axes[r, 1], "no mask")
            _label(axes[r, 4], "no mask")
    err = (
        [(TP_COLOR, "TP: found"), (FP_COLOR, "FP: false alarm"), (FN_COLOR, "FN: missed")]
        if binary
        else [(WRONG_COLOR, "wrong class")]
    )
    legend_title = "classes; last column: " + (
        "foreground found / false alarm / missed" if binary else "pixels where prediction != truth"
    )
    _class_legend(fig, names, palette, has_ignore, title=legend_title, ignore_index=ignore_index, extra=err)
    _title(fig, title, "predictions", note)
    return fig


def plot_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray | None],
    preds: Sequence[np.ndarray],
    path: str | Path,
    palette: Sequence[Sequence[int]],
    titles: Sequence[str] | None = None,
    ignore_index: int = 255,
    *,
    names: Sequence[str] | None = None,
    sizes: Sequence[tuple[int, int] | None] | None = None,
    title: str | None = None,
    note: str = "",
    ious: Sequence[float] | None = None,
) -> Path:
    """Save :func:`figure_prediction_grid` (predictions.png, worst.png, val_predictions.png).

    Example:
        >>> img = np.zeros((32, 48, 3), np.uint8); m = np.zeros((32, 48), np.uint8)
        >>> plot_prediction_grid([img], [m], [m], "/tmp/p.png", default_palette(2), ["a"], names=["bg", "cat"])
        PosixPath('/tmp/p.png')
    """
    fig = figure_prediction_grid(
        images,
        targets,
        preds,
        palette,
        titles,
        ignore_index,
        names=names,
        sizes=sizes,
        title=title,
        note=note,
        ious=ious,
    )
    return _save(fig, path, 80)


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
    names = _class_names(names, palette)
    count = min(len(images), max_images)
    rows = max(1, math.ceil(count / per_row))
    cols = min(count, per_row) if count else 1
    imgs = [_as_rgb(images[i]) for i in range(count)]
    msks = [_as_mask(masks[i]) for i in range(count)]
    ratio = max((im.shape[0] / im.shape[1] for im in imgs), default=1.0)
    fig = Figure(figsize=(2 * 2.2 * cols, 2.2 * ratio * rows + 1.4 + 0.25 * math.ceil(len(names) / 8)))
    fig.set_layout_engine("constrained", h_pad=0.02, w_pad=0.02, hspace=0.01, wspace=0.01)
    subs = np.atleast_2d(fig.subfigures(rows, cols, wspace=0.02, hspace=0.02))
    has_ignore = False
    for i in range(count):
        sub = subs[i // per_row, i % per_row]
        sub.set_facecolor("0.93")  # a shaded card per sample: which mask belongs to which image is obvious
        a_img, a_mask = sub.subplots(1, 2)
        _show(a_img, imgs[i])
        _show(a_mask, colorize(msks[i], palette, ignore_index))
        sub.suptitle(f"#{i}", fontsize=9)
        has_ignore |= bool((msks[i] == ignore_index).any())
    _class_legend(fig, names, palette, has_ignore, ignore_index=ignore_index)
    _title(fig, title, f"training batch (augmented), {count} of {len(images)} samples: image | mask")
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
        >>> imgs = np.zeros((2, 3, 32, 32), np.float32); ms = np.zeros((2, 32, 32), np.uint8)
        >>> plot_train_batch(imgs, ms, "/tmp/b.png", default_palette(2), ["background", "pet"])
        PosixPath('/tmp/b.png')
    """
    fig = figure_train_batch(
        images, masks, palette, names, title=title, ignore_index=ignore_index, max_images=max_images
    )
    return _save(fig, path, 80)


# --------------------------------------------------------------------------------------------------- confusion


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
    _title(fig, title, f"confusion matrix, {_count(mat.sum())} pixels")
    return fig


def plot_confusion_matrix(mat: np.ndarray, names: Sequence[str], path: str | Path, *, title: str | None = None) -> Path:
    """Save :func:`figure_confusion_matrix` (counts and row-normalised side by side) as confusion_matrix.png.

    Example:
        >>> plot_confusion_matrix(np.array([[90, 10], [5, 95]]), ["background", "pet"], "/tmp/cm.png")
        PosixPath('/tmp/cm.png')
    """
    return _save(figure_confusion_matrix(mat, names, title=title), path, 90)


# --------------------------------------------------------------------------------------------------- labels


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
    colors = [_rgb(palette[i]) if i < len(palette) else BACKGROUND_COLOR for i in range(len(names))]
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
    for k in range(len(keys)):
        base = table[:, :k].sum(1)
        left.barh(splits, table[:, k], left=base, color=_hex(colors[k]), edgecolor="0.3", linewidth=0.5)
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
            right.text(floor, ys[k], f" none in {split}", va="center", ha="left", fontsize=7, color=_hex(FP_COLOR))
    right.set_yticks(y + height * (len(splits) - 1) / 2, keys)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlim(left=floor)
    right.set_xlabel("share of pixels (log)")
    right.set_title("per class, splits side by side", fontsize=11)
    right.legend(title="split", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    right.grid(axis="x", alpha=0.3)
    _class_legend(fig, names, palette, has_ignore)
    _title(fig, title, "label distribution")
    return fig


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
        >>> shares = {"train": {"background": 0.7, "pet": 0.3}, "val": {"background": 0.75, "pet": 0.25}}
        >>> plot_label_distribution(shares, "/tmp/labels.png", default_palette(2))
        PosixPath('/tmp/labels.png')
    """
    return _save(figure_label_distribution(shares_per_split, palette, names, title=title), path, 90)
