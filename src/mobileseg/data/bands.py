"""Images with any number of bands: grayscale, 16-bit and multi-band (TIFF) input, for ``channels`` other than 3.

With the default ``channels=3`` every image goes through :func:`mobileseg.data.loading.to_rgb` as it always did
(a grayscale JPEG becomes RGB, RGBA loses its alpha). Any other ``channels`` keeps the file's own bands and bit
depth instead, so a 1-channel model sees the grey values and a 4-band satellite tile keeps its near-infrared band:

* PNG/JPEG/BMP/WebP are read with Pillow: ``L`` (8-bit) and ``I;16`` (16-bit) grey, ``LA``, ``RGB``, ``RGBA``;
  with ``channels=1`` a colour image is converted to grey (Pillow's luminance), the one conversion allowed;
* ``.tif``/``.tiff`` are read with ``tifffile`` (the ``tifffile`` dependency), which knows multi-band,
  planar and 16-bit files that Pillow cannot open;
* values are scaled to [0, 1] by the dtype's range: ``uint8 / 255``, ``uint16 / 65535``. Other dtypes (float,
  signed) are refused with the file's name, since their range is unknown.

Decoded arrays are HxWxC ``uint8`` or ``uint16``. The training cache keeps non-RGB images as ``uint16``
(:func:`widen`: an 8-bit value ``v`` becomes ``v * 257``, and ``v * 257 / 65535 == v / 255`` exactly), so one
cache array holds a dataset that mixes 8- and 16-bit files.

Example:
    >>> arr = read_image_input(np.full((4, 6), 65535, np.uint16), channels=1)
    >>> arr.shape, arr.dtype, float(unit_tensor(arr).max())
    ((4, 6, 1), dtype('uint16'), 1.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from mobileseg.errors import DataError

from .loading import ImageInput, decode_file, orientation, tiff_orientation, to_rgb

TIFF_SUFFIXES = (".tif", ".tiff")
RGB_CHANNELS = 3
# Luminance weights of Pillow's ``convert('L')`` (ITU-R 601-2), used for 16-bit colour too.
LUMA = np.array([0.299, 0.587, 0.114])
# Smallest standard deviation a normalisation band gets: a band constant over the train split would otherwise
# divide by ~0 and turn any other value at inference into a huge input.
MIN_STD = 1e-2
Geometry = tuple[tuple[int, int], int]


def read_bands(path: str | Path, channels: int) -> tuple[np.ndarray, Geometry]:
    """An image file as HxWxC uint8/uint16 with ``channels`` bands, EXIF-uprighted, and its ``(stored (w, h),
    orientation)`` (what :func:`mobileseg.data.loading.read_mask` needs).

    Raises:
        DataError: naming the file when it is unreadable, has another band count or an unsupported dtype.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        read = _read_tiff(path)
        if read is not None:
            arr, turn = read
            stored = (arr.shape[1], arr.shape[0])
            return array_bands(upright(arr, turn), channels, str(path)), (stored, turn)
    im, geometry = decode_file(path, "image")
    return image_bands(ImageOps.exif_transpose(im), channels, str(path)), geometry


# The EXIF/TIFF orientations (tag 274) as array operations, equal to Pillow's ``ImageOps.exif_transpose``.
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """An HxW(xC) array as displayed under an EXIF/TIFF orientation (1-8), as Pillow uprights an image.

    Example:
        >>> upright(np.array([[1, 2], [3, 4]]), 6).tolist()  # stored sideways: rotate 90 degrees clockwise
        [[3, 1], [4, 2]]
    """
    turn = _UPRIGHT.get(orientation)
    return arr if turn is None else np.ascontiguousarray(turn(arr))


def _read_tiff(path: Path) -> tuple[np.ndarray, int] | None:
    """A TIFF's first series as HxW or HxWxC (planar files transposed) and its Orientation tag (1 = upright, as
    Pillow honours it for the TIFFs it opens, masks included); None without ``tifffile`` (Pillow then reads
    what it can)."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr, axes = series.asarray(), series.axes
            turn = tiff_orientation(tif)
    except Exception as e:  # tifffile raises many types for damaged files; all mean "unreadable"
        raise DataError(f"unreadable image {path}: {e}") from None
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and axes.endswith("YX"):  # planar: bands first
        arr = arr.transpose(1, 2, 0)
    if arr.ndim not in (2, 3):
        raise DataError(f"image {path} has TIFF axes {axes} (shape {arr.shape}); expected one HxW(xC) image")
    return arr, turn


def image_bands(im: Image.Image, channels: int, where: str = "image") -> np.ndarray:
    """An opened (uprighted) PIL image as HxWxC uint8/uint16 with ``channels`` bands; see :func:`array_bands`."""
    mode = im.mode
    if mode.startswith("I;16"):
        arr: np.ndarray = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"image {where}: 32-bit values outside 0..65535 are not supported")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        raise DataError(f"image {where} has float values (mode F); save it as 8- or 16-bit integers")
    elif mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    elif mode in ("P", "PA") and "transparency" in im.info:
        arr = np.asarray(im.convert("RGBA"))
    else:  # 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversion
        arr = np.asarray(im.convert("L" if mode == "1" else "RGB"))
    return array_bands(arr, channels, where)


def array_bands(arr: np.ndarray, channels: int, where: str = "image array") -> np.ndarray:
    """HxW or HxWxC (CxHxW when the first axis is the band count) -> HxWxC uint8/uint16 with ``channels`` bands.

    ``channels=1`` also takes grey+alpha (alpha dropped) and RGB(A) (converted to grey); any other count must
    match the image's bands.

    Raises:
        DataError: another band count, or a dtype other than uint8/uint16/bool, naming ``where``.
    """
    if arr.ndim == 3 and arr.shape[0] == channels and arr.shape[-1] != channels:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise DataError(f"{where}: shape {arr.shape} is not an HxW or HxWxC image")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"{where} has {arr.dtype} values; channels={channels} reads 8- or 16-bit unsigned integers "
            "(scaled to [0, 1] by 255 or 65535): convert the file"
        )
    bands = arr.shape[-1]
    if channels == 1 and bands == 2:  # grey + alpha
        arr = arr[..., :1]
    elif channels == 1 and bands in (3, 4):
        grey = arr[..., :3].astype(np.float64) @ LUMA
        arr = np.clip(grey + 0.5, 0, np.iinfo(arr.dtype).max).astype(arr.dtype)[..., None]
    elif bands != channels:
        raise DataError(
            f"{where} has {bands} band(s) but channels={channels}; set channels={bands} (data section) "
            f"for this dataset, or convert the image"
        )
    return np.ascontiguousarray(arr)


def read_image_input(image: ImageInput, channels: int) -> Image.Image | np.ndarray:
    """What prediction reads: an RGB PIL image for ``channels=3`` (:func:`to_rgb`, unchanged), else an HxWxC
    uint8/uint16 array with ``channels`` bands from a path, PIL image or array, exactly as training reads it."""
    if channels == RGB_CHANNELS:
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        return array_bands(image, channels)
    if isinstance(image, Image.Image):
        if orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        return image_bands(image, channels)
    if isinstance(image, str | Path):
        return read_bands(image, channels)[0]
    raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")


def image_hw(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(H, W) of a PIL image or an HxWxC array."""
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return image.height, image.width


def widen(arr: np.ndarray) -> np.ndarray:
    """uint8 -> uint16 with the same [0, 1] value (``v * 257``); uint16 as is."""
    return arr.astype(np.uint16) * np.uint16(257) if arr.dtype == np.uint8 else arr


def unit_tensor(arr: np.ndarray) -> torch.Tensor:
    """HxWxC uint8/uint16 -> float32 CxHxW in [0, 1] (divided by the dtype's maximum)."""
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32)).div_(scale)


def unit(image: torch.Tensor) -> torch.Tensor:
    """A cached image tensor in [0, 1]: uint8 (RGB cache) / 255, float (non-RGB cache, already scaled) as is."""
    return image.float().div(255) if image.dtype == torch.uint8 else image.float()


def resize_bands(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased, like Pillow's) resize of an HxWxC uint8/uint16 array, same dtype."""
    if arr.shape[:2] == tuple(size_hw):
        return arr
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32))[None]
    y = F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)[0]
    top = float(np.iinfo(arr.dtype).max)
    return y.round_().clamp_(0, top).numpy().astype(arr.dtype).transpose(1, 2, 0)


def display_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """HxWx3 uint8 to look at (overlays): the first three bands, or the first band as grey, 16-bit scaled to 8."""
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    arr = image if image.ndim == 3 else image[..., None]
    arr = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr.astype(np.uint8))


def channel_stats(dataset: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of a dataset's images in [0, 1] (``dataset.load(i)[0]``, the
    un-augmented cached images), for the model's normalisation of non-RGB input; a std is at least ``MIN_STD``.

    Example:
        >>> mean, std = channel_stats(SegmentationDataset(spec, "train", (224, 224)))  # doctest: +SKIP
    """
    total = count = squares = None
    for i in range(len(dataset)):
        x = unit(dataset.load(i)[0]).double().flatten(1)
        s, q = x.sum(1), (x * x).sum(1)
        total = s if total is None else total + s
        squares = q if squares is None else squares + q
        count = x.shape[1] + (count or 0)
    if total is None or squares is None or not count:
        raise DataError("no images to compute the normalisation statistics from (empty train split)")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(MIN_STD)
    return [float(v) for v in mean], [float(v) for v in std]


__all__ = [
    "RGB_CHANNELS",
    "array_bands",
    "channel_stats",
    "display_rgb",
    "image_bands",
    "image_hw",
    "read_bands",
    "read_image_input",
    "resize_bands",
    "unit",
    "unit_tensor",
    "widen",
]
