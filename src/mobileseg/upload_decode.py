"""Uploaded bytes -> an upright RGB image of bounded size, refusing what is not a supported, intact image.

:func:`decode_image` opens the image lazily, checks its header (format, pixel count) and decides from the header
the size it will be decoded at: at most ``max_output_pixels``. A JPEG is decoded at that reduced scale directly
(the decoder's draft mode: 1/2, 1/4 or 1/8 of the size, so a 24 MP photo never exists in memory at full size);
other formats are decoded once and shrunk at once, the full-size buffer dropped before anything else runs.
Why: the model only sees ``imgsz`` (a few hundred pixels a side) and the mask and overlay are for display, but
every later step (probabilities, mask, overlay, PNG/JPEG encoding) costs several bytes per pixel: a 35 KB PNG of
6000x6000 took the server from 0.8 to 2.7 GB when it was processed at full size.

Example:
    >>> decoded = decode_image(open("photo.jpg", "rb").read(), max_pixels=25_000_000)  # doctest: +SKIP
    >>> decoded.original_size, decoded.image.size, decoded.scale  # doctest: +SKIP
    ((6000, 4000), (2449, 1632), 0.408)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from mobileseg.data.jpeg import jpeg_problem
from mobileseg.data.loading import PIL_ERRORS, SWAPPING_ORIENTATIONS, mode_to_rgb, orientation
from mobileseg.upload import ApiError

DEFAULT_MAX_OUTPUT_PIXELS = 4_000_000
# Pillow formats accepted from uploads (the JPEG plugin also opens phones' multi-picture MPO files).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose does).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded for the server: upright RGB, at most ``max_output_pixels``.

    Attributes:
        image: the RGB image the model, the mask and the overlay use.
        original_size: (width, height) of the upload as displayed (after EXIF orientation).
        decoded_size: (width, height) the decoder produced before the final resize, as stored (before
            orientation): smaller than the file's own size when a JPEG was decoded in draft mode. It is the
            largest pixel buffer this upload cost.
    """

    image: Image.Image
    original_size: tuple[int, int]
    decoded_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Output size / original size (1.0 when the image was small enough to keep its size)."""
        return self.image.width / self.original_size[0]


def output_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest (width, height) with the same aspect ratio and at most ``max_pixels`` pixels.

    Example:
        >>> output_size(6000, 6000, 4_000_000)
        (2000, 2000)
        >>> output_size(640, 480, 4_000_000)
        (640, 480)
    """
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _shrink(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A loaded image resized to ``size``; palette and 1-bit images are made RGB first (resizing them is nearest)."""
    if im.mode in ("P", "PA", "1"):
        im = mode_to_rgb(im)
    elif im.mode.startswith("I;16"):
        im = im.convert("I")  # Pillow cannot resize I;16; "I" keeps the values, mode_to_rgb scales them later
    # reducing_gap: a cheap integer box reduction first, then bilinear (antialiased) on the smaller image.
    return im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image opened lazily (header only), refused if it is not one or is over ``max_pixels``."""
    if not data:
        raise ApiError(400, "the upload is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image refused as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ApiError(415, "not an image, or not a supported format (JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except PIL_ERRORS as e:
        raise ApiError(422, f"cannot read the image: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ApiError(
            413, f"image is {w}x{h} ({w * h / 1e6:.1f} MP); the limit is {max_pixels / 1e6:g} MP (max_pixels)"
        )
    if w < 1 or h < 1:
        raise ApiError(422, f"image has no pixels ({w}x{h})")
    return im


def header_pixels(data: bytes) -> int:
    """Width x height from the image's header (0 if it cannot be read: decoding will say why). Microseconds."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            return im.width * im.height
    except (UnidentifiedImageError, Image.DecompressionBombError, *PIL_ERRORS):
        return 0


def decode_image(data: bytes, max_pixels: int, max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS) -> DecodedImage:
    """Bytes -> upright RGB image of at most ``max_output_pixels``, refusing non-images, bombs and broken files.

    The pixel count is checked on the header (``Image.open`` is lazy) before anything is decoded, and the output
    size is chosen from the header too, so a JPEG is decoded straight at (about) that size.

    Args:
        data: the uploaded file.
        max_pixels: largest image accepted, width x height of the file (413 above).
        max_output_pixels: larger images are reduced (aspect ratio kept) to at most this many pixels.

    Raises:
        ApiError: 400 empty, 413 over ``max_pixels`` or a decompression bomb, 415 not a supported image,
            422 truncated or corrupt.
    """
    im = _open(data, max_pixels)
    if im.format in ("JPEG", "MPO") and (problem := jpeg_problem(data)):  # Pillow greys out a cut JPEG silently
        raise ApiError(422, f"the image is truncated or corrupt: {problem}")
    w, h = im.size
    turn = orientation(im)  # from the header (a TIFF's tags are not carried over to a resized copy)
    target = output_size(w, h, max_output_pixels)
    try:
        if target != (w, h) and im.format in ("JPEG", "MPO"):  # MPO: phones' JPEG with extra frames
            im.draft("RGB", target)  # the decoder scales by 1/2, 1/4 or 1/8, staying >= target
        im.load()  # decoding happens here: truncation and corrupt data show up now
        decoded = im.size
        if im.size != target:
            im = _shrink(im, target)  # the full-size buffer is dropped as soon as this returns
        im = mode_to_rgb(im)
        if turn in TRANSPOSE:
            im = im.transpose(TRANSPOSE[turn])
            im.info = {}  # the copy's metadata still says "rotate": nothing downstream may turn it again
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image refused as a decompression bomb: {e}") from None
    except PIL_ERRORS as e:
        raise ApiError(422, f"the image is truncated or corrupt: {e}") from None
    original = (h, w) if turn in SWAPPING_ORIENTATIONS else (w, h)
    return DecodedImage(im, original, decoded)


__all__ = ["DEFAULT_MAX_OUTPUT_PIXELS", "DecodedImage", "decode_image", "header_pixels", "output_size"]
