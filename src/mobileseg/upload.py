"""Uploads for ``mobileseg serve``: how many at once, and the body held in memory.

Two jobs, both about what untrusted uploads may cost the server:

- :class:`Gate` admits at most ``max_concurrent`` working plus ``max_queue`` waiting requests and answers the rest
  503 with ``Retry-After`` before their bodies are read.
- :func:`read_upload` streams the body (a ``multipart/form-data`` form or a raw ``image/*`` body) into memory,
  refusing it as soon as it is over the byte limit. :class:`MemoryForm` parses multipart with python-multipart's
  streaming parser, because Starlette's form parser spools files over 1 MB to a temporary file.

Decoding the image at a bounded size is :mod:`mobileseg.upload_decode`'s job.

Example:
    >>> gate = Gate(concurrent=1, queue=0)
    >>> with gate.admit():
    ...     pass
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
MAX_PARTS = 16  # a form with more parts than this is not an upload from the page, curl or a script


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


__all__ = ["ApiError", "Gate", "MemoryForm", "read_upload", "release_memory"]
