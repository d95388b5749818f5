"""What both converters write and share: the class table, the copied images, the mask PNGs and ``data.yaml``.

Class names -> indices (:func:`class_table`, :func:`class_of`): background is 0, ``__ignore__`` labels are
``IGNORE`` (255), and a label outside the table is an error unless ``unknown`` says to paint it as background or
ignore. The output folder (:func:`prepare_out`) holds ``images/``, ``masks/`` and the ``data.yaml`` that
:func:`write_dataset_yaml` writes; every function that reads a user's file raises :class:`DataError` naming it.

Example:
    >>> class_of("cat", ["background", "cat"], "error", "a.json")
    1
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from PIL import Image

from ..loading import PIL_ERRORS, DataError

IGNORE = 255
BACKGROUND_LABELS = ("background", "_background_")  # LabelMe's labelme2voc spells it _background_
IGNORE_LABELS = ("__ignore__", "ignore")

Unknown = Literal["error", "background", "ignore"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def class_table(found: Iterable[str], names: Sequence[str] | None) -> list[str]:
    """The full names list (background first): ``names`` as given, or background + the found labels."""
    if names is not None:
        names = [str(n) for n in names]
        if not names:
            raise DataError("names must list at least the background class")
        if len(set(names)) != len(names):
            raise DataError(f"names repeat a class: {names}")
        if names[0] in set(found) - set(BACKGROUND_LABELS):  # painted 0, its shapes would vanish into the background
            raise DataError(
                f"class_names start with '{names[0]}', a label of the annotations, but the first class is the "
                f"background (index 0, every unlabelled pixel); put it first, e.g. class_names=background,"
                f"{','.join(names)}"
            )
        return names
    return ["background"] + [n for n in dict.fromkeys(found) if n not in BACKGROUND_LABELS]


def class_of(label: str, names: list[str], unknown: Unknown, where: str) -> int | None:
    """Class index of a label; IGNORE for ignore labels; None to skip (unknown='background' paints nothing)."""
    if label in IGNORE_LABELS:
        return IGNORE
    if label in names:
        return names.index(label)
    if label in BACKGROUND_LABELS:
        return 0
    if unknown == "ignore":
        return IGNORE
    if unknown == "background":
        return None
    raise DataError(
        f"{where}: label '{label}' is not in names {names}; add it, or pass unknown='background' or 'ignore'"
    )


def check_polygon(points: Sequence[float], where: str) -> None:
    if len(points) % 2 or len(points) < 6:
        raise DataError(f"{where}: a polygon needs at least 3 points (x, y pairs); got {len(points) / 2:g}")


def place_image(src: Path, images_out: Path, stem: str, link: bool) -> None:
    dst = images_out / f"{stem}{src.suffix.lower()}"
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    if link:
        dst.symlink_to(src.resolve())
    else:
        shutil.copy2(src, dst)


def image_size(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(stored (w, h), displayed (w, h)) of an image, from its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return (w, h), ((h, w) if orient in (5, 6, 7, 8) else (w, h))


def check_size(image: Path, width: int, height: int, where: str) -> None:
    stored, shown = image_size(image)
    if (width, height) not in (stored, shown):
        raise DataError(f"{where}: annotated size {width}x{height} but image {image} is {shown[0]}x{shown[1]}")


@contextmanager
def prepare_out(out_dir: str | Path) -> Iterator[tuple[Path, Path, Path]]:
    """``(out, out/images, masks folder)`` for one conversion; the masks appear in ``out/masks`` only when it ends.

    Why: masks carry the class numbering, which another conversion (other labels, other ``class_names``) may
    number differently, so masks already in ``out/masks`` are refused rather than mixed with new ones; and the
    masks are written to a staging folder renamed at the end, so a conversion that fails half-way leaves no masks
    behind to block the re-run. Images may already be in ``out/images`` (converting a dataset in place).
    """
    out = Path(out_dir)
    images, masks = out / "images", out / "masks"
    if masks.is_dir() and any(masks.iterdir()):
        raise DataError(
            f"{masks} already holds masks (an earlier conversion?); two conversions may number their classes "
            f"differently, so convert into a new out= folder or delete {masks} first"
        )
    images.mkdir(parents=True, exist_ok=True)
    staging = out / ".masks.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield out, images, staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if masks.is_dir():
        masks.rmdir()  # empty: checked above
    staging.rename(masks)


def save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8)).save(path)  # 2-D uint8 -> an 8-bit grey PNG


def write_dataset_yaml(out_dir: Path, names: list[str], source: str) -> Path:
    """``out_dir/data.yaml`` for masks that hold class indices directly (0..K, 255 = ignore).

    ``mask_values`` maps every index to itself: without it a two-class dataset would fall back to the binary
    default (anything but 0 is foreground), which would turn ignore pixels into foreground.
    """
    if len(names) > IGNORE:
        raise DataError(f"{len(names)} classes do not fit in uint8 masks beside ignore {IGNORE}")
    doc = {
        "path": ".",
        "names": list(names),
        "ignore_index": IGNORE,
        "mask_values": {**{i: i for i in range(len(names))}, IGNORE: "ignore"},
    }
    path = out_dir / "data.yaml"
    text = f"# Written by mobileseg convert from {source}\n" + yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text)
    return path


def unique_stem(stem: str, seen: dict[str, str], where: str) -> str:
    if stem in seen:
        raise DataError(f"{where}: two images are both named '{stem}' ({seen[stem]} and {where}); rename one")
    seen[stem] = where
    return stem
