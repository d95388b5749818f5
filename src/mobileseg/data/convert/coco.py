"""COCO instance (polygons / RLE) and panoptic annotations -> class-index masks (see :mod:`mobileseg.data.convert`).

COCO instance annotations have no drawing order, so they are painted largest first: a small object lying on a
large one stays visible. Crowd regions (``iscrowd=1``) are painted first, as ``ignore`` by default.

Example:
    >>> convert_coco("instances.json", "imgs", "out")  # doctest: +SKIP
    PosixPath('out/data.yaml')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..loading import PIL_ERRORS, DataError
from .layout import (
    IGNORE,
    Unknown,
    check_polygon,
    check_size,
    class_of,
    class_table,
    place_image,
    prepare_out,
    read_json,
    save_mask,
    unique_stem,
    write_dataset_yaml,
)
from .rasterize import polygon_mask, rle_mask


def _find_image(images_dir: Path, file_name: str, json_path: Path) -> Path:
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{json_path}: image '{file_name}' not found in {images_dir}")


def convert_coco(
    json_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    *,
    unknown: Unknown = "error",
    crowd: Literal["ignore", "class"] = "ignore",
    panoptic_dir: str | Path | None = None,
    link: bool = False,
) -> Path:
    """COCO instance (polygons / RLE) or panoptic annotations -> ``out_dir/{images,masks,data.yaml}``.

    Args:
        json_path: the COCO JSON (``images``, ``annotations``, ``categories``). Panoptic files (annotations with
            ``segments_info``) are read with their PNGs from ``panoptic_dir``.
        images_dir: folder holding the images named by ``file_name`` (or by its last part).
        out_dir: where ``images/``, ``masks/`` and ``data.yaml`` are written.
        names: the full class list, background first (e.g. ``['background', 'person']``); default: background +
            every category, in category-id order.
        unknown: what a category outside ``names`` becomes: 'error', 'background' or 'ignore'.
        crowd: crowd regions (``iscrowd=1``) as 'ignore' (default) or as their class.
        panoptic_dir: folder of the panoptic PNGs; default: the JSON's path without ``.json``
            (``panoptic_val2017.json`` -> ``panoptic_val2017/``), as COCO ships them.
        link: symlink the images instead of copying them.

    Returns:
        the written dataset YAML (pass it as ``data=``).

    Raises:
        DataError: naming the file: malformed JSON, an annotation of an unknown image or category, a missing
            image, a polygon with fewer than 3 points, a size that does not match the image.

    Example:
        >>> convert_coco("instances.json", "imgs", "out", names=["background", "cat"], unknown="background")
        ...     # doctest: +SKIP
        PosixPath('out/data.yaml')
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    images, categories, by_image = _read_coco(json_path)
    classes = _Classes(categories, class_table([categories[k] for k in sorted(categories)], names), unknown, crowd)
    panoptic = any("segments_info" in a for anns in by_image.values() for a in anns)
    pan_dir = Path(panoptic_dir) if panoptic_dir is not None else json_path.with_suffix("")

    with prepare_out(out_dir) as (out, images_out, masks_out):
        seen: dict[str, str] = {}
        for image_id, img in images.items():
            file_name = str(img.get("file_name", ""))
            where = f"{json_path} (image {file_name or image_id})"
            try:
                width, height = int(img["width"]), int(img["height"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{where}: 'width' and 'height' are required") from None
            src = _find_image(images_dir, file_name, json_path)
            check_size(src, width, height, where)
            stem = unique_stem(Path(file_name).stem, seen, where)
            mask = np.zeros((height, width), dtype=np.uint8)
            for ann in by_image[image_id]:
                if panoptic:
                    _paint_panoptic(mask, ann, pan_dir, classes, where)
            if not panoptic:
                _paint_instances(mask, by_image[image_id], classes, where)
            save_mask(mask, masks_out / f"{stem}.png")
            place_image(src, images_out, stem, link)
    return write_dataset_yaml(out, classes.table, str(json_path))


def _read_coco(json_path: Path) -> tuple[dict[Any, dict[str, Any]], dict[Any, str], dict[Any, list[dict[str, Any]]]]:
    """The COCO file's images by id, category names by id, and annotations grouped by image id (checked)."""
    doc = read_json(json_path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{json_path}: not a COCO file (expected a JSON object with an 'images' list)")
    try:
        images = {img["id"]: img for img in doc["images"]}
        categories = {c["id"]: str(c["name"]) for c in doc.get("categories", [])}
    except (KeyError, TypeError) as e:
        raise DataError(
            f"{json_path}: every image needs 'id', every category 'id' and 'name' ({e!r} missing)"
        ) from None
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{json_path}: 'annotations' must be a list")
    by_image: dict[Any, list[dict[str, Any]]] = {k: [] for k in images}
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{json_path}: annotation #{i} has no 'image_id'")
        if ann["image_id"] not in images:
            raise DataError(
                f"{json_path}: annotation {ann.get('id', f'#{i}')} refers to image_id {ann['image_id']!r}, "
                "which is not in 'images'"
            )
        by_image[ann["image_id"]].append(ann)
    return images, categories, by_image


@dataclass(frozen=True)
class _Classes:
    """How a COCO category becomes a mask value: the categories by id, the class table and the two choices."""

    categories: dict[Any, str]
    table: list[str]
    unknown: Unknown
    crowd: str

    def of(self, category_id: Any, is_crowd: bool, where: str) -> int | None:
        """The value to paint (IGNORE for a crowd region when crowd='ignore'); None to paint nothing."""
        if category_id not in self.categories:
            raise DataError(f"{where}: category_id {category_id!r} is not in 'categories'")
        cls = class_of(self.categories[category_id], self.table, self.unknown, where)
        if cls is not None and is_crowd and self.crowd == "ignore":
            return IGNORE
        return cls


def _instance_region(seg: Any, height: int, width: int, what: str) -> np.ndarray | None:
    """Pixels of one annotation's ``segmentation`` (polygons or RLE); None for an empty polygon list."""
    if isinstance(seg, list):
        if not seg:
            return None
        if not all(isinstance(p, list) for p in seg):
            raise DataError(f"{what}: 'segmentation' must be a list of polygons or an RLE object")
        for p in seg:
            check_polygon(p, what)
        return polygon_mask(seg, height, width)
    if isinstance(seg, dict):
        return rle_mask(seg, height, width, what)
    raise DataError(f"{what}: no 'segmentation' (polygons or RLE)")


def _paint_instances(mask: np.ndarray, anns: list[dict[str, Any]], classes: _Classes, where: str) -> None:
    """Crowd regions first, then instances largest first (small objects on top)."""
    height, width = mask.shape
    layers: list[tuple[int, int, int, np.ndarray]] = []  # (is not crowd, -area, order, region) + class below
    values: list[int] = []
    for order, ann in enumerate(anns):
        what = f"{where}, annotation {ann.get('id', f'#{order}')}"
        is_crowd = bool(ann.get("iscrowd", 0))
        cls = classes.of(ann.get("category_id"), is_crowd, what)
        if cls is None:
            continue
        region = _instance_region(ann.get("segmentation"), height, width, what)
        if region is None:
            continue
        layers.append((int(not is_crowd), -int(region.sum()), order, region))
        values.append(cls)
    for key in sorted(range(len(layers)), key=lambda k: layers[k][:3]):
        mask[layers[key][3]] = values[key]


def _paint_panoptic(mask: np.ndarray, ann: dict[str, Any], pan_dir: Path, classes: _Classes, where: str) -> None:
    png = pan_dir / str(ann.get("file_name", ""))
    try:
        with Image.open(png) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
    except FileNotFoundError:
        raise DataError(f"{where}: panoptic PNG {png} not found (set panoptic_dir)") from None
    except PIL_ERRORS as e:
        raise DataError(f"{where}: cannot read panoptic PNG {png}: {e}") from None
    if rgb.shape[:2] != mask.shape:
        raise DataError(f"{where}: panoptic PNG {png} is {rgb.shape[1]}x{rgb.shape[0]}, not the image's size")
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    for seg in ann.get("segments_info", []):
        cls = classes.of(seg.get("category_id"), bool(seg.get("iscrowd")), f"{where}, segment {seg.get('id')}")
        if cls is None:
            continue
        mask[ids == seg.get("id")] = cls
