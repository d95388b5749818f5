"""Decoding images and masks from disk, the same way for training, checking and prediction.

Everything that touches pixel files goes through here so that the dataset check, the training loader and
``predict`` agree on what a file contains: any image mode becomes RGB (:func:`to_rgb`, the one conversion for
paths, PIL images and arrays), EXIF orientation is honoured, masks stay single-channel raw values (the class
mapping happens later, in :meth:`DatasetSpec.encode_mask`).

Decoding is strict (:func:`decode_file`): a truncated file, or a JPEG whose scan ends at an early end-of-image
marker, is a :class:`DataError` naming the file. Pillow itself decodes such a JPEG without an error or a warning
(libjpeg fills the missing blocks with grey and Pillow drops libjpeg's warnings), so a damaged photo would
otherwise be trained on as half grey.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mobileseg.errors import DataError

from .jpeg import jpeg_problem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ORIENTATION_TAG = 0x0112
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# Errors PIL raises for unreadable, truncated or hostile files.
PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
ImageInput: TypeAlias = "Image.Image | np.ndarray | str | Path"
_TRUNCATED_LOCK = threading.Lock()


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) of an opened image, without decoding pixels."""
    try:
        if im.format == "PNG" and im.tile and "exif" not in im.info and not _png_has_exif(im.fp):
            return 1  # Pillow's getexif() would decode the whole PNG to look for an eXIf chunk after its pixels
        return int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # malformed EXIF must not make an otherwise fine image unreadable
        return 1


def _png_has_exif(fp: Any) -> bool:
    """Whether a PNG holds an eXIf chunk anywhere, read from its chunk headers alone (no pixel is decoded).

    True when the chunk list cannot be read to its end (a damaged file): Pillow's own reading then decides.
    """
    if fp is None:
        return True
    start = fp.tell()
    try:
        fp.seek(8)  # the signature
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return True
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"eXIf":
                return True
            if kind == b"IEND":
                return False
            fp.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    finally:
        fp.seek(start)


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation is applied."""
    w, h = im.size
    return (h, w) if orientation(im) in SWAPPING_ORIENTATIONS else (w, h)


def mode_to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, with the same value rules as arrays in :func:`to_rgb` (16/32-bit integers are read as
    16-bit values, floats as 0..1), since ``convert`` would clip them."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return array_to_image(np.asarray(im)).convert("RGB")
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")  # resolve the palette first, avoiding PIL's palette-transparency warning
    return im.convert("RGB")


def array_to_image(arr: np.ndarray) -> Image.Image:
    """An image array as a PIL image of 8-bit values (grey, grey+alpha, RGB or RGBA).

    Accepted: HxW, HxWxC or CxHxW with C in 1..4; ``uint8`` (and ``bool``: 0/255) as is; other integer types as
    16-bit values scaled to 8 bits (``v / 257``, the same as a 16-bit PNG opened from disk); floats as 0..1.

    Raises:
        DataError: for other shapes or dtypes.
    """
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)) or 0 in arr.shape:
        raise DataError(f"image array of shape {arr.shape}: expected HxW, HxWxC or CxHxW with 1 to 4 channels")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0, 1) * 255 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float32) / 257.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise DataError(f"image array of dtype {arr.dtype}: expected integers, floats (0..1) or bool")
    return Image.fromarray(np.ascontiguousarray(arr))


def to_rgb(image: ImageInput) -> Image.Image:
    """Any image input as an upright RGB PIL image: the one conversion used for training, checks and prediction,
    so the same picture gives the same pixels however it arrives.

    Args:
        image: a file path (decoded strictly by :func:`load_image`), a PIL image (its EXIF orientation is
            applied), or an array (see :func:`array_to_image` for shapes and value ranges: 16-bit values are
            scaled exactly like a 16-bit file).

    Raises:
        DataError: an unreadable file (naming it) or an unsupported array shape/dtype.

    Example:
        >>> grey16 = np.full((4, 6), 65535, np.uint16)
        >>> to_rgb(grey16).getpixel((0, 0)), to_rgb(Image.fromarray(grey16)).getpixel((0, 0))
        ((255, 255, 255), (255, 255, 255))
    """
    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, np.ndarray):
        return mode_to_rgb(array_to_image(image))
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    if orientation(image) != 1:  # EXIF orientation: phone photos are stored sideways
        image = ImageOps.exif_transpose(image)
    return mode_to_rgb(image)


def _load_strict(im: Image.Image) -> None:
    """``im.load()`` that raises on a truncated file even where another library set LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        im.load()
        return
    with _TRUNCATED_LOCK:  # rare: switch the global off for this decode only
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def decode_file(
    path: str | Path, kind: str = "image", draft: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[tuple[int, int], int]]:
    """Open and fully decode an image or mask file, strictly; the pixels are as stored (not uprighted), except a
    TIFF's, which Pillow uprights itself (uprighting it again is a no-op: the tag is gone).

    Args:
        path: the file (its content decides the format, not its extension).
        kind: 'image' or 'mask', for the message.
        draft: optional displayed (width, height) the caller will resize to; a JPEG is then decoded at the
            smallest DCT scale (down to 1/8) that is still at least this large. The whole stream is still read.

    Returns:
        The loaded image and its ``(stored (w, h), EXIF orientation)``.

    Raises:
        DataError: naming the file when it is missing, unreadable, truncated or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        im = Image.open(io.BytesIO(data))
        stored = stored_size(im)
        # Pillow uprights a TIFF as it loads it and drops its Orientation tag: read the tag first (no decode).
        tiff_turn = orientation(im) if im.format == "TIFF" else None
        if draft is not None and im.format in ("JPEG", "MPO"):  # a JPEG's EXIF is read at open: no decode yet
            w, h = draft
            if orientation(im) in SWAPPING_ORIENTATIONS:
                w, h = h, w
            im.draft("RGB", (w, h))
        _load_strict(im)  # decode now, inside the try: Image.open is lazy and truncation shows only here
        # Only after the strict decode: a PNG's getexif() decodes the pixels itself, under the global switch.
        geometry = (stored, orientation(im) if tiff_turn is None else tiff_turn)
    except UnidentifiedImageError:
        raise DataError(f"unreadable {kind} {path}: not an image, or a format Pillow cannot read") from None
    except PIL_ERRORS as e:
        reason = e.strerror if isinstance(e, OSError) and e.filename and e.strerror else e  # path said once
        raise DataError(f"unreadable {kind} {path}: {reason}") from None
    problem = jpeg_problem(data) if im.format in ("JPEG", "MPO") else None
    if problem:
        raise DataError(f"unreadable {kind} {path}: corrupt JPEG: {problem}")
    return im, geometry


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
    im, geometry = decode_file(path, "image", draft)
    return mode_to_rgb(ImageOps.exif_transpose(im)), geometry


def load_image(path: str | Path) -> Image.Image:
    """An image file as an RGB PIL image, EXIF orientation applied.

    Raises:
        DataError: naming the file when it is missing, unreadable or truncated.
    """
    return open_image(path)


def mask_array(im: Image.Image, path: Path, palette: bool) -> np.ndarray:
    """Raw mask values of an opened, upright mask: HxW integers, or HxWx3 uint8 when a palette is used.

    Palette-mode PNGs give their palette indices (VOC style), or their colours when the dataset has a ``palette``:
    an editor numbers an indexed PNG's colours in its own order, so index i need not be the palette's colour i.
    16-bit masks keep their full values.
    """
    mode = im.mode
    if palette and mode in ("P", "PA"):
        return np.asarray(im.convert("RGB"))
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
    if mode in ("LA", "PA", "RGBA"):
        layers = np.asarray(im)
        colour, alpha = layers[..., :-1], layers[..., -1]
        if colour.size and colour.min() == colour.max() and alpha.min() != alpha.max():
            raise DataError(
                f"mask {path} keeps its labels in the alpha (transparency) channel, and its colour is the same "
                f"everywhere; save the alpha channel as a grey mask (e.g. Image.open(p).getchannel('A').save(...))"
            )
        if mode != "RGBA":
            return layers[..., 0]
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
    im = ImageOps.exif_transpose(decode_file(path, "mask")[0])
    arr = mask_array(im, path, palette)
    return reorient_mask(arr, geometry)


def stored_size(im: Image.Image) -> tuple[int, int]:
    """(w, h) of an opened image's pixels as stored. Pillow reports a TIFF's size already turned by its
    Orientation tag (it uprights the pixels when it loads them), so a TIFF's stored size is read from its tags."""
    if im.format == "TIFF":
        w, h = im.tag_v2.get(256), im.tag_v2.get(257)  # ImageWidth, ImageLength
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return im.size


def image_geometry(path: str | Path) -> tuple[tuple[int, int], int]:
    """(stored (w, h), EXIF orientation) of an image from its header only (a TIFF Pillow cannot open, such as
    one with 5 or more bands, from tifffile's: multi-band images are read with it, see ``data/bands.py``)."""
    try:
        with Image.open(path) as im:
            return stored_size(im), orientation(im)
    except PIL_ERRORS as e:
        geometry = _tiff_geometry(Path(path)) if str(path).lower().endswith((".tif", ".tiff")) else None
        if geometry is None:
            raise DataError(f"unreadable image {path}: {e}") from None
        return geometry


def tiff_orientation(tif: Any) -> int:
    """The Orientation tag (274) of an open ``tifffile.TiffFile``'s first page: 1 (upright) when absent or invalid."""
    tag = tif.pages[0].tags.get(ORIENTATION_TAG)
    value = int(tag.value) if tag is not None and isinstance(tag.value, int) else 1
    return value if 1 <= value <= 8 else 1


def _tiff_geometry(path: Path) -> tuple[tuple[int, int], int] | None:
    """(stored (w, h), orientation) of a TIFF's first series from its header, or None when tifffile cannot read
    it either."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
            turn = tiff_orientation(tif)
        return (int(shape[axes.index("X")]), int(shape[axes.index("Y")])), turn
    except Exception:  # not installed, damaged, or no X/Y axes: Pillow's error is the one reported
        return None


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
