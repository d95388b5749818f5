"""Uploads for ``mobileseg serve``: how many at once, the body held in memory, the image decoded at a bounded size.

Three jobs, all about what untrusted uploads may cost the server:

- :class:`Gate` admits at most ``max_concurrent`` working plus ``max_queue`` waiting requests and answers the rest
  503 with ``Retry-After`` before their bodies are read.
- :func:`read_upload` streams the body (a ``multipart/form-data`` form or a raw ``image/*`` body) into memory,
  refusing it as soon as it is over the byte limit. :class:`MemoryForm` parses multipart with python-multipart's
  streaming parser, because Starlette's form parser spools files over 1 MB to a temporary file.
- :func:`decode_image` opens the image lazily, checks its header (format, pixel count) and decides from the header
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

import asyncio
import ctypes
import ctypes.util
import io
import math
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from mobileseg.data.jpeg import jpeg_problem
from mobileseg.data.loading import PIL_ERRORS, SWAPPING_ORIENTATIONS, mode_to_rgb, orientation

try:
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import Request
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"mobileseg serve needs the 'serve' extra ({e.name} is missing): pip install 'mobileseg[serve]'"
    ) from e

MB = 1024 * 1024
T = TypeVar("T")
DEFAULT_MAX_OUTPUT_PIXELS = 4_000_000
# Pillow formats accepted from uploads (the JPEG plugin also opens phones' multi-picture MPO files).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
MAX_PARTS = 16  # a form with more parts than this is not an upload from the page, curl or a script
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


class ApiError(Exception):
    """An error the client caused (or may retry), answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class Gate:
    """Admission and workers: ``concurrent`` requests work at a time, ``queue`` more wait, the rest get 503.

    Admission is counted from a request's arrival (before its body is read), so a burst costs at most
    ``concurrent + queue`` uploads in memory. The work runs on this gate's own threads (``concurrent`` for
    ordinary images, ``concurrent // 2`` (at least 1) for those over ``max_output_pixels``) rather than
    the web framework's pool of 40: that bounds the decoded images and masks in memory at once, and it keeps the
    large allocations on the same few threads, whose malloc arenas are then reused instead of each of 40 threads
    keeping its own high-water mark. Thread-safe (the app may be driven from several event loops, e.g. tests).

    Args:
        concurrent: requests decoding/predicting/encoding at the same time.
        queue: requests allowed to wait for a worker.

    Example:
        >>> gate = Gate(concurrent=1, queue=0)
        >>> with gate.admit():
        ...     pass  # a second admit() in here would raise ApiError(503)
    """

    def __init__(self, concurrent: int, queue: int) -> None:
        self.concurrent, self.queue = max(1, concurrent), max(0, queue)
        self.executor = ThreadPoolExecutor(self.concurrent, thread_name_prefix="mobileseg-serve")
        # Uploads over max_output_pixels have their own lane, half as wide: a burst of them cannot take every
        # worker from ordinary photos, and fewer of their full-size decode buffers exist at once.
        self.large_executor = ThreadPoolExecutor(max(1, self.concurrent // 2), thread_name_prefix="mobileseg-large")
        self.admitted = 0
        # ... and at most half of the places: ordinary photos still get in while large uploads queue.
        self.large_places, self.large_admitted = max(1, (self.concurrent + self.queue) // 2), 0
        self.seconds = 1.0  # running estimate of one request's work, for Retry-After
        self._lock = threading.Lock()

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, worked through ``concurrent`` at a time."""
        return min(60, max(1, math.ceil(self.seconds * (self.queue + 1) / self.concurrent)))

    @contextmanager
    def admit(self, large: bool = False) -> Iterator[None]:
        """Count a request in while it lives, or refuse it with 503 and ``Retry-After`` when the places are taken.

        Every request is counted on arrival; one found ``large`` (from its header, once its body is read) is
        counted again, against the large lane's share of the places.
        """
        with self._lock:
            count = self.large_admitted if large else self.admitted
            places = self.large_places if large else self.concurrent + self.queue
            if count >= places:
                wait = self.retry_after()
                what = (
                    f"{count} large images in progress (at most {places})" if large else f"{count} requests in progress"
                )
                raise ApiError(
                    503,
                    f"server busy: {what}, max_concurrent={self.concurrent}, max_queue={self.queue}; retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
            self._count(large, +1)
        try:
            yield
        finally:
            with self._lock:
                self._count(large, -1)

    def _count(self, large: bool, step: int) -> None:
        if large:
            self.large_admitted += step
        else:
            self.admitted += step

    async def run(self, fn: Callable[..., T], *args: Any, large: bool = False) -> T:
        """``fn(*args)`` on a worker thread (of the large lane if ``large``), timed for Retry-After."""

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds = 0.8 * self.seconds + 0.2 * (time.perf_counter() - start)

        executor = self.large_executor if large else self.executor
        return await asyncio.get_running_loop().run_in_executor(executor, timed)


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    After a large upload the decoder's buffers are freed but glibc keeps them in its arenas, so the process would
    stay at its peak; trimming makes the next burst start from the baseline again.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


# ------------------------------------------------------------------------------------------------ multipart
@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False

    def disposition(self) -> dict[bytes, bytes]:
        return parse_options_header(self.headers.get("content-disposition", ""))[1]

    @property
    def name(self) -> str:
        return self.disposition().get(b"name", b"").decode("utf-8", "replace")

    @property
    def filename(self) -> str | None:
        value = self.disposition().get(b"filename")
        return None if value is None else value.decode("utf-8", "replace")


class MemoryForm:
    """A ``multipart/form-data`` body parsed into memory as it streams in.

    python-multipart's low-level parser hands over each part's bytes through callbacks; keeping them in a
    bytearray (instead of its ``FormParser``/Starlette's ``UploadFile``, which spool large files to temporary
    files) means an upload never reaches the disk. The body size cap is enforced by the caller.

    Args:
        boundary: the ``boundary`` parameter of the request's Content-Type.

    Example:
        >>> form = MemoryForm(b"XyZ")
        >>> form.write(b'--XyZ\\r\\nContent-Disposition: form-data; name="file"; filename="a.png"\\r\\n\\r\\nPNG')
        >>> form.write(b"\\r\\n--XyZ--\\r\\n")
        >>> form.image()
        b'PNG'
    """

    def __init__(self, boundary: bytes) -> None:
        self.parts: list[_Part] = []
        self.ended = False
        self._field, self._value = bytearray(), bytearray()
        callbacks: dict[str, Callable[..., None]] = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": lambda data, start, end: self.parts[-1].data.extend(data[start:end]),
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        try:
            self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        except (ValueError, MultipartParseError) as e:
            raise ApiError(400, f"malformed multipart boundary: {e}") from None

    def _part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise ApiError(400, f"too many form fields (more than {MAX_PARTS}); send the image as the 'file' field")
        self.parts.append(_Part())

    def _header_end(self) -> None:
        self.parts[-1].headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1")
        self._field.clear()
        self._value.clear()

    def _part_end(self) -> None:
        self.parts[-1].complete = True

    def _end(self) -> None:
        self.ended = True

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as e:
            raise ApiError(400, f"malformed multipart body: {e}") from None

    def image(self) -> bytes:
        """The uploaded file: the field named ``file`` (or ``image``), else the only part with a file name."""
        if not self.ended:
            raise ApiError(400, "incomplete multipart body (the upload was cut off?)")
        parts = [p for p in self.parts if p.complete]
        named = [p for p in parts if p.name in ("file", "image")]
        files = [p for p in parts if p.filename is not None]
        chosen = named[0] if named else files[0] if len(files) == 1 else None
        if chosen is None:
            raise ApiError(400, "no image in the form: send the image file as the field 'file'")
        return bytes(chosen.data)


async def _body_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, refusing it (413) as soon as it is known to exceed ``limit`` bytes.

    Content-Length is checked first so an honest oversized upload is refused before a byte is read; the running
    count catches chunked uploads and bodies longer than they claimed.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, f"invalid Content-Length: {declared!r}") from None
        if size > limit:
            raise ApiError(413, f"request body is {size / MB:.1f} MB; the limit is {limit / MB:.3g} MB (max_upload_mb)")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"request body is over the limit of {limit / MB:.3g} MB (max_upload_mb)")
        if chunk:
            yield chunk


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes, from a multipart form or a raw ``image/*`` body, held in memory only.

    Args:
        request: the incoming request (its body is consumed).
        limit: largest body accepted, in bytes (413 above).
    """
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(400, "multipart/form-data without a boundary")
        form = MemoryForm(boundary)
        async for chunk in _body_chunks(request, limit):
            form.write(chunk)
        return form.image()
    if ctype and not (ctype.startswith(b"image/") or ctype == b"application/octet-stream"):
        raise ApiError(
            415,
            f"cannot read an image from a {ctype.decode('latin-1')} body: send multipart/form-data with the image "
            "as the field 'file', or the raw image with an image/* Content-Type",
        )
    body = bytearray()
    async for chunk in _body_chunks(request, limit):
        body.extend(chunk)
    return bytes(body)


# --------------------------------------------------------------------------------------------------- decoding
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


__all__ = [
    "ApiError",
    "DecodedImage",
    "Gate",
    "release_memory",
    "MemoryForm",
    "decode_image",
    "output_size",
    "read_upload",
]
