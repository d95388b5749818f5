"""LabelMe JSON files -> class-index masks (see :mod:`mobileseg.data.convert`).

Shapes are painted in file order, later shapes on top (what LabelMe shows); ``polygon``, ``rectangle``, ``circle``
and ``mask`` shapes have area, the others are skipped. An image is found beside its JSON (``imagePath``) or
decoded from the embedded ``imageData``.

Example:
    >>> convert_labelme("labelme_jsons/", "datasets/mine")  # doctest: +SKIP
    PosixPath('datasets/mine/data.yaml')
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..loading import IMAGE_EXTENSIONS, PIL_ERRORS, DataError
from . import layout
from .layout import Unknown
from .rasterize import polygon_mask

CIRCLE_VERTICES = 64


def _labelme_files(folder_or_files: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(folder_or_files, str | os.PathLike):
        path = Path(folder_or_files)
        if path.is_dir():
            files = sorted(path.rglob("*.json"))
            if not files:
                raise DataError(f"no LabelMe .json files in {path}")
            return files
        return [path]
    return [Path(p) for p in folder_or_files]


def _labelme_image(doc: dict[str, Any], json_path: Path, images_out: Path, stem: str, link: bool) -> Path:
    """The image a LabelMe file annotates: ``imagePath`` beside the JSON, else the embedded ``imageData``."""
    rel = doc.get("imagePath")
    candidates = []
    if rel:
        candidates = [json_path.parent / str(rel), json_path.parent / Path(str(rel).replace("\\", "/")).name]
    candidates += [json_path.with_suffix(ext) for ext in IMAGE_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            layout.place_image(c, images_out, stem, link)
            return c
    if doc.get("imageData"):
        try:
            im = Image.open(io.BytesIO(base64.b64decode(doc["imageData"])))
            im.load()
        except (ValueError, *PIL_ERRORS) as e:
            raise DataError(f"{json_path}: cannot decode the embedded imageData ({e})") from None
        dst = images_out / f"{stem}.png"
        im.save(dst)
        return dst
    raise DataError(f"{json_path}: image '{rel}' not found beside it and no embedded imageData")


def _labelme_region(shape: dict[str, Any], height: int, width: int, where: str) -> np.ndarray | None:
    """Pixels of one LabelMe shape; None for shapes without area (point, line, linestrip)."""
    kind = shape.get("shape_type") or "polygon"
    try:
        pts = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'points' must be a list of [x, y]") from None
    if kind == "polygon":
        layout.check_polygon(pts.ravel().tolist(), where)
        return polygon_mask([pts.ravel().tolist()], height, width)
    if kind == "rectangle":
        if len(pts) != 2:
            raise DataError(f"{where}: a rectangle needs 2 points (corners); got {len(pts)}")
        (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
        return polygon_mask([[xa, ya, xb, ya, xb, yb, xa, yb]], height, width)
    if kind == "circle":
        if len(pts) != 2:
            raise DataError(f"{where}: a circle needs 2 points (centre, rim); got {len(pts)}")
        radius = float(np.hypot(*(pts[1] - pts[0])))
        t = np.linspace(0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        ring = np.stack([pts[0, 0] + radius * np.cos(t), pts[0, 1] + radius * np.sin(t)], 1)
        return polygon_mask([ring.ravel().tolist()], height, width)
    if kind == "mask":  # LabelMe 5: a base64 PNG of the region inside the box given by 2 points
        if len(pts) != 2 or not shape.get("mask"):
            raise DataError(f"{where}: a mask shape needs 2 points and a 'mask' image")
        try:
            with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as im:
                part = np.asarray(im.convert("L")) > 0
        except (ValueError, *PIL_ERRORS) as e:
            raise DataError(f"{where}: cannot decode the shape's mask ({e})") from None
        out = np.zeros((height, width), dtype=bool)
        x, y = (int(round(v)) for v in pts.min(0))
        h, w = part.shape
        ys, xs = slice(max(y, 0), min(y + h, height)), slice(max(x, 0), min(x + w, width))
        out[ys, xs] = part[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
        return out
    return None


def convert_labelme(
    folder_or_files: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    *,
    unknown: Unknown = "error",
    link: bool = False,
) -> Path:
    """LabelMe JSON files -> ``out_dir/{images,masks,data.yaml}``.

    Shapes are painted in file order, later ones on top. ``polygon``, ``rectangle``, ``circle`` and ``mask``
    shapes have area; ``point``/``line``/``linestrip`` shapes are skipped. Labels ``background``/``_background_``
    paint class 0 (holes) and ``__ignore__`` paints ignore (255).

    Args:
        folder_or_files: a folder (its ``*.json``, recursively) or a list of LabelMe JSON files.
        out_dir: where ``images/``, ``masks/`` and ``data.yaml`` are written.
        names: the full class list, background first; default: background + the labels found, sorted.
        unknown: what a label outside ``names`` becomes: 'error', 'background' or 'ignore'.
        link: symlink the images instead of copying them (an embedded ``imageData`` image is always written).

    Returns:
        the written dataset YAML (pass it as ``data=``).

    Raises:
        DataError: naming the file: malformed JSON, a missing image, a polygon with fewer than 3 points, an
            unknown label (with ``unknown='error'``), a size that does not match the image.

    Example:
        >>> convert_labelme("labelme_jsons/", "datasets/mine", names=["background", "cat", "dog"])  # doctest: +SKIP
        PosixPath('datasets/mine/data.yaml')
    """
    files = _labelme_files(folder_or_files)
    docs: list[tuple[Path, dict[str, Any]]] = []
    for f in files:
        doc = layout.read_json(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise DataError(f"{f}: not a LabelMe file (expected a JSON object with a 'shapes' list)")
        docs.append((f, doc))
    found = sorted({str(s.get("label", "")) for _, d in docs for s in d["shapes"] if isinstance(s, dict)})
    table = layout.class_table([n for n in found if n not in layout.IGNORE_LABELS], names)

    with layout.prepare_out(out_dir) as (out, images_out, masks_out):
        seen: dict[str, str] = {}
        for json_path, doc in docs:
            stem = layout.unique_stem(json_path.stem, seen, str(json_path))
            image = _labelme_image(doc, json_path, images_out, stem, link)
            (stored, shown) = layout.image_size(image)
            width, height = int(doc.get("imageWidth") or shown[0]), int(doc.get("imageHeight") or shown[1])
            if (width, height) not in (stored, shown):
                raise DataError(
                    f"{json_path}: imageWidth x imageHeight {width}x{height} but image {image} is {shown[0]}x{shown[1]}"
                )
            mask = np.zeros((height, width), dtype=np.uint8)
            for k, shape in enumerate(doc["shapes"]):
                if not isinstance(shape, dict):
                    raise DataError(f"{json_path}: shape #{k} is not an object")
                label = str(shape.get("label", ""))
                where = f"{json_path}: shape #{k} ('{label}')"
                cls = layout.class_of(label, table, unknown, where)
                region = _labelme_region(shape, height, width, where)
                if cls is None or region is None:
                    continue
                mask[region] = cls
            layout.save_mask(mask, masks_out / f"{stem}.png")
    source = str(folder_or_files) if isinstance(folder_or_files, str | os.PathLike) else f"{len(files)} LabelMe files"
    return layout.write_dataset_yaml(out, table, source)
