"""Decoding images and masks from disk, the same way for training, checking and prediction.

Everything that touches pixel files goes through here so that the dataset check, the training loader and
``predict`` agree on what a file contains: any image mode becomes RGB, EXIF orientation is honoured, masks stay
single-channel raw values (the class mapping happens later, in :meth:`DatasetSpec.encode_mask`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mobileseg.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ORIENTATION_TAG = 0x0112
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# Errors PIL raises for unreadable, truncated or hostile files.
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) of an opened image, without decoding pixels."""
    try:
        return int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # malformed EXIF must not make an otherwise fine image unreadable
        return 1


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation is applied."""
    w, h = im.size
    return (h, w) if orientation(im) in SWAPPING_ORIENTATIONS else (w, h)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16/32-bit grey is scaled from the 16-bit range, since ``convert`` would clip it."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = np.asarray(im).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        arr = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")  # resolve the palette first, avoiding PIL's palette-transparency warning
    return im.convert("RGB")


def open_image(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open, fully decode and upright an image as RGB.

    Args:
        path: the file (its content decides the format, not its extension: the pets set holds a GIF and a PNG
            named ``.jpg``).
        draft: optional (width, height) the caller will resize to; JPEGs are then decoded at a reduced DCT scale
            that is still at least this large, which is several times faster for large photos.
    """
    return open_image_geometry(path, draft)[0]


def open_image_geometry(
    path: str | Path, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[tuple[int, int], int]]:
    """:func:`open_image` plus the image's stored (w, h) and EXIF orientation, which :func:`read_mask` needs to
    upright a mask drawn on the raw pixels."""
    path = Path(path)
    try:
        im = Image.open(path)
        geometry = (im.size, orientation(im))
        if draft is not None and im.format == "JPEG":
            w, h = draft
            if geometry[1] in SWAPPING_ORIENTATIONS:
                w, h = h, w
            im.draft("RGB", (w, h))
        im.load()  # decode now, inside the try: Image.open is lazy and truncation shows only here
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im), geometry
    except PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def load_image(path: str | Path) -> Image.Image:
    """An image file as an RGB PIL image, EXIF orientation applied.

    Raises:
        DataError: naming the file when it is missing, unreadable or truncated.
    """
    return open_image(path)


def mask_array(im: Image.Image, path: Path, palette: bool) -> np.ndarray:
    """Raw mask values of an opened, upright mask: HxW integers, or HxWx3 uint8 when a palette is used.

    Palette-mode PNGs give their palette indices (VOC style); 16-bit masks keep their full values.
    """
    mode = im.mode
    if mode in ("L", "P"):
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"mask {path}: 32-bit values outside 0..65535 are not supported")
        return arr.astype(np.uint16)
    if mode in ("LA", "PA"):
        return np.asarray(im)[..., 0]
    if mode in ("RGB", "RGBA", "RGBX"):
        arr = np.asarray(im.convert("RGB") if mode != "RGB" else im)
        if palette:
            return arr
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            return np.ascontiguousarray(arr[..., 0])  # grey values saved as RGB
        raise DataError(
            f"mask {path} is a colour ({mode}) image; give the dataset a 'palette' (one [r, g, b] per class) "
            "or save masks single-channel"
        )
    raise DataError(f"mask {path}: unsupported image mode {mode}")


def read_mask(
    path: str | Path, palette: bool = False, geometry: tuple[tuple[int, int], int] | None = None
) -> np.ndarray:
    """Decode a mask file to raw values, EXIF-uprighted consistently with its image.

    The mask's own EXIF orientation is applied. If the image had an axis-swapping EXIF orientation and the mask
    has the image's *stored* (raw) size rather than its displayed size, the mask was drawn on the raw pixels, so
    the image's orientation is applied to it too. (A square image is ambiguous; the mask is taken as drawn on
    the displayed image, which is what browser-based annotation tools and ``cv2.imread`` show.)

    Args:
        path: the mask file.
        palette: keep RGB masks as HxWx3 (matched to the dataset palette later).
        geometry: ``(stored (w, h), orientation)`` of the paired image as returned by :func:`image_geometry`.
    """
    path = Path(path)
    try:
        im = Image.open(path)
        im.load()
        im = ImageOps.exif_transpose(im)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read mask {path}: {e}") from None
    arr = mask_array(im, path, palette)
    return reorient_mask(arr, geometry)


def image_geometry(path: str | Path) -> tuple[tuple[int, int], int]:
    """(stored (w, h), EXIF orientation) of an image from its header only."""
    try:
        with Image.open(path) as im:
            return im.size, orientation(im)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def reorient_mask(arr: np.ndarray, geometry: tuple[tuple[int, int], int] | None) -> np.ndarray:
    """Apply the image's EXIF rotation to a mask stored in the image's raw (un-rotated) orientation."""
    if geometry is None:
        return arr
    (w, h), orient = geometry
    if orient not in SWAPPING_ORIENTATIONS or w == h:
        return arr
    mh, mw = arr.shape[:2]
    if (mw, mh) == (w, h):  # raw-oriented mask: rotate it like the image
        return apply_orientation(arr, orient)
    return arr


def apply_orientation(arr: np.ndarray, orient: int) -> np.ndarray:
    """The numpy equivalent of PIL.ImageOps.exif_transpose for an HxW(xC) array."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orient)
    return np.ascontiguousarray(op(arr)) if op else arr


def resize_nearest(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW(xC) array of any dtype (pixel-centre convention, like PIL's)."""
    h, w = arr.shape[:2]
    oh, ow = size_hw
    if (h, w) == (oh, ow):
        return arr
    rows = np.minimum(((np.arange(oh) + 0.5) * (h / oh)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(ow) + 0.5) * (w / ow)).astype(np.int64), w - 1)
    return arr[rows[:, None], cols[None, :]]
