"""Label converters: COCO and LabelMe annotations -> class-index mask PNGs + a dataset YAML mobileseg reads.

Both converters write the layout :func:`mobileseg.data.resolve_dataset` understands::

    out_dir/
        images/<stem>.<ext>   # the images, copied (or symlinked with link=True)
        masks/<stem>.png      # uint8 class indices: 0 = background, 1..K = classes, 255 = ignore
        data.yaml             # names (background first), ignore_index, mask_values (index -> itself)

Class names -> indices: background is 0; without ``names`` the classes are numbered 1..K in the order COCO lists
its categories (by id) or, for LabelMe, in sorted label order. With ``names`` (the full list, background first, as
in a dataset YAML) that order is used, and a label missing from it is an error unless ``unknown`` says to paint
it as background or ignore.

Overlaps: LabelMe shapes are painted in file order, later shapes on top (what LabelMe shows). COCO instance
annotations have no drawing order, so they are painted largest first: a small object lying on a large one stays
visible. COCO crowd regions (``iscrowd=1``) are painted first, as ``ignore`` by default.

Polygons are rasterised with pycocotools when it is installed (``pip install mobileseg[convert]``: COCO's own
definition of a polygon's pixels); without it a numpy scanline fill with the same pixel convention is used (a
pixel belongs to a polygon when its centre is inside), so a rectangle from (2, 1) to (6, 4) covers the same
4 x 3 pixels either way; along slanted edges the two can differ by a pixel (about 1 % of a polygon's pixels).
Pillow's polygon fill is not used: it also paints the boundary row and column (5 x 4 here), so masks would
change with the installed packages. Compressed COCO RLE needs pycocotools.

Example:
    >>> yaml_path = convert_coco("annotations/instances_train.json", "train2017", "datasets/mycoco")  # doctest: +SKIP
    >>> yaml_path = convert_labelme("labelme_folder", "datasets/mine")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from PIL import Image

from .loading import IMAGE_EXTENSIONS, PIL_ERRORS, DataError

IGNORE = 255
BACKGROUND_LABELS = ("background", "_background_")  # LabelMe's labelme2voc spells it _background_
IGNORE_LABELS = ("__ignore__", "ignore")
CIRCLE_VERTICES = 64

Unknown = Literal["error", "background", "ignore"]

try:  # optional: COCO's reference rasteriser and RLE codec
    from pycocotools import mask as _coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    _coco_mask = None


# ------------------------------------------------------------------------------------------------ rasterising


def _scanline_fill(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Even-odd polygon fill: pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is.

    A centre exactly on the polygon's left/top edge is out and on its right/bottom edge is in, which is what
    pycocotools does for axis-aligned edges at half-pixel positions.
    """
    out = np.zeros((height, width), dtype=bool)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(height) + 0.5
    ys = rows[:, None]
    # Half-open rule on y (min < y <= max) counts a vertex shared by two edges once.
    crosses = (np.minimum(y0, y1)[None] < ys) & (ys <= np.maximum(y0, y1)[None])
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0[None] + (ys - y0[None]) * (x1 - x0)[None] / (y1 - y0)[None]
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    for r in np.flatnonzero(crosses.any(axis=1)):
        hits = xs[r][np.isfinite(xs[r])]
        for a, b in zip(hits[0::2], hits[1::2], strict=False):
            # columns whose centre c + 0.5 lies in (a, b]
            start = max(0, int(np.floor(a - 0.5)) + 1)
            stop = min(width, int(np.floor(b - 0.5)) + 1)
            if stop > start:
                out[r, start:stop] = True
    return out


def _coco_decode(rle: Any) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools 2.0.x warns about numpy 2's copy keyword on every decode
        warnings.simplefilter("ignore", DeprecationWarning)
        return _coco_mask.decode(rle).astype(bool)


def polygon_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union of polygons (each a flat ``[x1, y1, x2, y2, ...]`` list in pixel coordinates) as an HxW bool mask.

    Args:
        polygons: flat coordinate lists, at least 3 points each (the caller checks and names the file).
        height: mask height.
        width: mask width.

    Example:
        >>> int(polygon_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8).sum())  # a 4 x 3 rectangle
        12
    """
    if _coco_mask is not None:
        rles = _coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
        return _coco_decode(_coco_mask.merge(rles))
    out = np.zeros((height, width), dtype=bool)
    for p in polygons:
        out |= _scanline_fill(np.asarray(p, dtype=np.float64).reshape(-1, 2), height, width)
    return out


def _rle_mask(rle: dict[str, Any], height: int, width: int, where: str) -> np.ndarray:
    """COCO RLE (uncompressed ``counts`` list or compressed string) -> HxW bool mask."""
    size = rle.get("size")
    if size is not None and [int(s) for s in size] != [height, width]:
        raise DataError(f"{where}: RLE size {size} differs from the image's {height}x{width}")
    counts = rle.get("counts")
    if _coco_mask is not None:
        if isinstance(counts, list):
            rle = _coco_mask.frPyObjects(rle, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode()}
        try:
            return _coco_decode(rle)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: cannot decode the RLE ({e})") from None
    if isinstance(counts, str | bytes):
        raise DataError(f"{where}: compressed RLE needs pycocotools (pip install 'mobileseg[convert]')")
    if not isinstance(counts, list):
        raise DataError(f"{where}: RLE 'counts' must be a list or a string")
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False  # runs alternate 0, 1, 0, ... in column-major order, starting with zeros
    for n in counts:
        if value:
            flat[pos : pos + int(n)] = True
        pos, value = pos + int(n), not value
    return flat.reshape(width, height).T


# ------------------------------------------------------------------------------------------------ shared


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _class_table(found: Iterable[str], names: Sequence[str] | None) -> list[str]:
    """The full names list (background first): ``names`` as given, or background + the found labels."""
    if names is not None:
        names = [str(n) for n in names]
        if not names:
            raise DataError("names must list at least the background class")
        if len(set(names)) != len(names):
            raise DataError(f"names repeat a class: {names}")
        return names
    return ["background"] + [n for n in dict.fromkeys(found) if n not in BACKGROUND_LABELS]


def _class_of(label: str, names: list[str], unknown: Unknown, where: str) -> int | None:
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


def _check_polygon(points: Sequence[float], where: str) -> None:
    if len(points) % 2 or len(points) < 6:
        raise DataError(f"{where}: a polygon needs at least 3 points (x, y pairs); got {len(points) / 2:g}")


def _place_image(src: Path, images_out: Path, stem: str, link: bool) -> None:
    dst = images_out / f"{stem}{src.suffix.lower()}"
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    if link:
        dst.symlink_to(src.resolve())
    else:
        shutil.copy2(src, dst)


def _image_size(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(stored (w, h), displayed (w, h)) of an image, from its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return (w, h), ((h, w) if orient in (5, 6, 7, 8) else (w, h))


def _check_size(image: Path, width: int, height: int, where: str) -> None:
    stored, shown = _image_size(image)
    if (width, height) not in (stored, shown):
        raise DataError(f"{where}: annotated size {width}x{height} but image {image} is {shown[0]}x{shown[1]}")


def _prepare_out(out_dir: str | Path) -> tuple[Path, Path, Path]:
    out = Path(out_dir)
    images, masks = out / "images", out / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    return out, images, masks


def _save_mask(mask: np.ndarray, path: Path) -> None:
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


def _unique_stem(stem: str, seen: dict[str, str], where: str) -> str:
    if stem in seen:
        raise DataError(f"{where}: two images are both named '{stem}' ({seen[stem]} and {where}); rename one")
    seen[stem] = where
    return stem


# ------------------------------------------------------------------------------------------------ COCO


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
    doc = _read_json(json_path)
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
    table = _class_table([categories[k] for k in sorted(categories)], names)
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
    panoptic = any("segments_info" in a for a in anns)
    pan_dir = Path(panoptic_dir) if panoptic_dir is not None else json_path.with_suffix("")

    out, images_out, masks_out = _prepare_out(out_dir)
    seen: dict[str, str] = {}
    for image_id, img in images.items():
        file_name = str(img.get("file_name", ""))
        where = f"{json_path} (image {file_name or image_id})"
        try:
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: 'width' and 'height' are required") from None
        src = _find_image(images_dir, file_name, json_path)
        _check_size(src, width, height, where)
        stem = _unique_stem(Path(file_name).stem, seen, where)
        mask = np.zeros((height, width), dtype=np.uint8)
        for ann in by_image[image_id]:
            if panoptic:
                _paint_panoptic(mask, ann, pan_dir, categories, table, unknown, crowd, where)
        if not panoptic:
            _paint_instances(mask, by_image[image_id], categories, table, unknown, crowd, where)
        _save_mask(mask, masks_out / f"{stem}.png")
        _place_image(src, images_out, stem, link)
    return write_dataset_yaml(out, table, str(json_path))


def _category_class(
    category_id: Any, categories: dict[Any, str], table: list[str], unknown: Unknown, where: str
) -> int | None:
    if category_id not in categories:
        raise DataError(f"{where}: category_id {category_id!r} is not in 'categories'")
    return _class_of(categories[category_id], table, unknown, where)


def _paint_instances(
    mask: np.ndarray,
    anns: list[dict[str, Any]],
    categories: dict[Any, str],
    table: list[str],
    unknown: Unknown,
    crowd: str,
    where: str,
) -> None:
    """Crowd regions first, then instances largest first (small objects on top)."""
    height, width = mask.shape
    layers: list[tuple[int, int, int, np.ndarray]] = []  # (is not crowd, -area, order, region) + class below
    classes: list[int] = []
    for order, ann in enumerate(anns):
        what = f"{where}, annotation {ann.get('id', f'#{order}')}"
        cls = _category_class(ann.get("category_id"), categories, table, unknown, what)
        if cls is None:
            continue
        is_crowd = bool(ann.get("iscrowd", 0))
        if is_crowd and crowd == "ignore":
            cls = IGNORE
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            if not seg:
                continue
            if not all(isinstance(p, list) for p in seg):
                raise DataError(f"{what}: 'segmentation' must be a list of polygons or an RLE object")
            for p in seg:
                _check_polygon(p, what)
            region = polygon_mask(seg, height, width)
        elif isinstance(seg, dict):
            region = _rle_mask(seg, height, width, what)
        else:
            raise DataError(f"{what}: no 'segmentation' (polygons or RLE)")
        layers.append((int(not is_crowd), -int(region.sum()), order, region))
        classes.append(cls)
    for key in sorted(range(len(layers)), key=lambda k: layers[k][:3]):
        mask[layers[key][3]] = classes[key]


def _paint_panoptic(
    mask: np.ndarray,
    ann: dict[str, Any],
    pan_dir: Path,
    categories: dict[Any, str],
    table: list[str],
    unknown: Unknown,
    crowd: str,
    where: str,
) -> None:
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
        cls = _category_class(seg.get("category_id"), categories, table, unknown, f"{where}, segment {seg.get('id')}")
        if cls is None:
            continue
        if seg.get("iscrowd") and crowd == "ignore":
            cls = IGNORE
        mask[ids == seg.get("id")] = cls


# ------------------------------------------------------------------------------------------------ LabelMe


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
            _place_image(c, images_out, stem, link)
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
        _check_polygon(pts.ravel().tolist(), where)
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
        doc = _read_json(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise DataError(f"{f}: not a LabelMe file (expected a JSON object with a 'shapes' list)")
        docs.append((f, doc))
    found = sorted({str(s.get("label", "")) for _, d in docs for s in d["shapes"] if isinstance(s, dict)})
    table = _class_table([n for n in found if n not in IGNORE_LABELS], names)

    out, images_out, masks_out = _prepare_out(out_dir)
    seen: dict[str, str] = {}
    for json_path, doc in docs:
        stem = _unique_stem(json_path.stem, seen, str(json_path))
        image = _labelme_image(doc, json_path, images_out, stem, link)
        (stored, shown) = _image_size(image)
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
            cls = _class_of(label, table, unknown, where)
            region = _labelme_region(shape, height, width, where)
            if cls is None or region is None:
                continue
            mask[region] = cls
        _save_mask(mask, masks_out / f"{stem}.png")
    source = str(folder_or_files) if isinstance(folder_or_files, str | os.PathLike) else f"{len(files)} LabelMe files"
    return write_dataset_yaml(out, table, source)
