"""The run's model card (``<run>/README.md``): what the model is, how well it does, how to use it.

The card travels with its run folder, so it holds no path of the machine that wrote it: the dataset and the
encoder weights are named, pictures are linked relative to the card, and the commands in "Use it" are meant to
be run from the run folder. Training writes the card (:func:`mobileseg.engine.run_files.write_model_card`, from
the pieces here); every later ``mobileseg test`` (or ``val``) of the run's weights adds or replaces one section
per split and weights file (:func:`add_eval_section`), between HTML comment markers, linking that evaluation's
report pictures relatively.

Example:
    >>> result = mobileseg.train(data="shapes/", epochs=1)  # doctest: +SKIP
    >>> mobileseg.test(weights=result.best)  # adds "Test metrics" to result.save_dir / "README.md"  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobileseg.models.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from mobileseg.data import DatasetSpec

CARD_NAME = "README.md"
TITLE_PREFIX = "# mobileseg model: "  # how a card written here starts; other README.md files are never touched
RUN_PICTURES = (
    ("results.png", "training curves (loss and metrics per epoch, the best epoch marked)"),
    ("val_predictions.png", "validation predictions of the last epoch"),
    ("train_batch.png", "augmented training inputs with their masks"),
    ("labels.png", "class shares per split"),
)
SHOWN_PICTURES = ("results.png", "val_predictions.png")  # also drawn in the card; the others are linked only
REPORT_PICTURES = (
    ("predictions.png", "predictions"),
    ("worst.png", "worst images"),
    ("confusion_matrix.png", "confusion matrix"),
)
PER_CLASS_KEYS = ("iou", "dice", "precision", "recall")
_SECTION = re.compile(r"<!-- mobileseg:test (?P<key>[^>]*?) -->\n.*?<!-- /mobileseg:test (?P=key) -->\n?", re.S)


def dataset_label(source: str) -> str:
    """A dataset's ``source`` without the machine's path.

    Example:
        >>> dataset_label("preset camvid on /data/camvid"), dataset_label("preset oxford_pets on b/all.yaml")
        ('preset camvid (folder camvid)', 'preset oxford_pets (all.yaml)')
    """
    preset = re.match(r"preset (\S+) on (.+)", source)
    if preset:
        target = Path(preset.group(2))
        kind = "" if target.suffix.lower() in (".yaml", ".yml") else "folder "
        return f"preset {preset.group(1)} ({kind}{target.name})"
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml"):
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return path.name if ("/" in source or "\\" in source) else source


def per_class_table(names: Sequence[str], per_class: Mapping[str, Sequence[float]]) -> list[str]:
    """Markdown rows: class | IoU | Dice | precision | recall | pixels ('-' where a class never occurs)."""
    rows = ["| class | IoU | Dice | precision | recall | pixels |", "|---|---|---|---|---|---|"]
    for i, name in enumerate(names):
        cells = [per_class[k][i] for k in PER_CLASS_KEYS]
        shown = " | ".join("-" if math.isnan(v) else f"{v:.4f}" for v in cells)
        rows.append(f"| {name} | {shown} | {int(per_class['support'][i]):,} |")
    return rows


def metrics_table(metrics: Mapping[str, float]) -> list[str]:
    return ["| metric | value |", "|---|---|", *(f"| {k} | {v:.4f} |" for k, v in metrics.items())]


def card_for_weights(weights: str | os.PathLike[str] | None) -> Path | None:
    """The model card of the run that made ``weights`` (``<run>/weights/<file>`` -> ``<run>/README.md``), if any.

    Only a card this module wrote counts, so a README.md of some other project is never edited.
    """
    if not weights:
        return None
    path = Path(weights).expanduser()
    if path.parent.name != "weights":
        return None
    card = path.parent.parent / CARD_NAME
    try:
        with open(card, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    return card if first.startswith(TITLE_PREFIX) else None


def add_eval_section(
    card: Path,
    *,
    split: str,
    weights_name: str,
    metrics: Mapping[str, Any],
    names: Sequence[str],
    per_class: Mapping[str, Sequence[float]] | None,
    images: int,
    report_dir: Path,
) -> Path:
    """Add (or replace) the card's section for one evaluation: ``split`` of ``weights_name``.

    One section per (split, weights file) between ``<!-- mobileseg:test ... -->`` markers, so running
    ``mobileseg test`` again replaces its figures instead of piling them up. Report pictures are linked relative to
    the card (``os.path.relpath``); on another drive (Windows) they are named instead.

    Args:
        card: the run's README.md (see :func:`card_for_weights`).
        split: the evaluated split (``'test'``...).
        weights_name: the evaluated file's name (``best.pt``, ``best.onnx``...).
        metrics: headline metrics (non-float entries are skipped).
        names: class names; ``per_class`` (None for binary models) is indexed like them.
        images: number of images evaluated.
        report_dir: the evaluation's report folder (``runs/test/<name>/``).

    Example:
        >>> add_eval_section(card, split="test", weights_name="best.pt", metrics={"iou": 0.71}, names=["bg", "fg"],
        ...                  per_class=None, images=20, report_dir=Path("runs/test/exp"))  # doctest: +SKIP
    """
    key = f"split={split} weights={weights_name}"
    headline = {k: float(v) for k, v in metrics.items() if isinstance(v, float)}
    body = [
        f"<!-- mobileseg:test {key} -->",
        f"## {split.capitalize()} metrics ({weights_name})",
        "",
        f"`mobileseg {'test' if split == 'test' else f'val split={split}'} weights=weights/{weights_name}`"
        f" on {images} {split} images.",
        "",
        *metrics_table(headline),
    ]
    if per_class is not None:
        body += ["", "Per class:", "", *per_class_table(names, per_class)]
    links = []
    for name, what in REPORT_PICTURES:
        target = report_dir / name
        if target.is_file():
            try:
                rel = Path(os.path.relpath(target.resolve(), card.parent.resolve())).as_posix()
                links.append(f"[{what}]({rel})")
            except ValueError:  # another drive: no relative path exists
                links.append(f"{what}: {report_dir.name}/{name}")
    if links:
        body += ["", "Report: " + ", ".join(links)]
    section = "\n".join(body) + f"\n<!-- /mobileseg:test {key} -->\n"
    text = card.read_text(encoding="utf-8")
    found = [m for m in _SECTION.finditer(text) if m.group("key") == key]
    if found:
        m = found[0]
        text = text[: m.start()] + section + text[m.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(card, text)
    return card


def update_model_card(
    weights: str | os.PathLike[str] | None,
    report_dir: Path,
    metrics: Mapping[str, Any],
    per_class: Mapping[str, Sequence[float]],
    spec: DatasetSpec,
    images: int,
    split: str = "test",
) -> Path | None:
    """Add one evaluation (``mobileseg test``/``val``) to the card of the run that made ``weights``.

    Returns the card, or None when the weights come from no mobileseg run folder (nothing is written then).
    The per-class table is added for multi-class models only (a binary model's headline is its foreground class).
    """
    card = card_for_weights(weights)
    if card is None:
        return None
    return add_eval_section(
        card,
        split=split,
        weights_name=Path(str(weights)).name,
        metrics=metrics,
        names=spec.names,
        per_class=None if spec.binary else per_class,
        images=images,
        report_dir=report_dir,
    )


__all__ = [
    "add_eval_section",
    "card_for_weights",
    "dataset_label",
    "per_class_table",
    "update_model_card",
]
