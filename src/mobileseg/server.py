"""``mobileseg serve``: a web page and an HTTP API around one :class:`~mobileseg.engine.predictor.Predictor`.

Routes (``create_app`` builds them; ``serve`` runs them with uvicorn):

- ``GET /``: a self-contained page (inline CSS and vanilla JS, no CDN): drop or pick an image, see the overlay and
  the mask side by side, the class legend with pixel shares, the inference time, and download the mask PNG.
- ``POST /predict``: one image, as ``multipart/form-data`` (field ``file``) or as the raw body with an ``image/*``
  Content-Type. Answers JSON (class shares, timing, image size, mask PNG and overlay as base64) or, with
  ``Accept: image/png`` or ``?format=png``, the mask PNG itself at the image's original size.
- ``GET /model``: class names, colours, input size, binary or not, and the server's limits.
- ``GET /health``: liveness, and whether the API wants a token (so the page knows to ask for one).
- ``GET /docs`` (Swagger UI), ``GET /redoc`` and ``GET /openapi.json``: the API reference. FastAPI's default
  pages load their JavaScript from a CDN; these are served from the ``fastapi-offline`` package's bundled copies,
  so the docs work on a machine without internet access.

Safety, and why:

- Loopback (``127.0.0.1``) unless ``host=`` says otherwise; binding elsewhere without a token prints a warning.
  On loopback the ``Host`` header must name loopback too, so a web page on another site cannot reach the server
  through DNS rebinding.
- ``token=`` (or ``$MOBILESEG_TOKEN``): every API call (``/predict``, ``/model``) then needs
  ``Authorization: Bearer <token>``; compared in constant time. The page, ``/health`` and the docs stay open: they
  reveal nothing about the model, and the page must load to let the user type the token in.
- Request bodies are capped (``max_upload_mb``) on Content-Length before reading and again while reading (a
  chunked upload has no Content-Length): 413. Images are capped in pixels (``max_pixels``) from their header,
  before any pixel is decoded, so a small file that claims a huge size (a decompression bomb) costs nothing: 413.
- Only common raster formats are opened (JPEG, PNG, WebP, BMP, TIFF, GIF): Pillow's other plugins (EPS runs
  Ghostscript, for one) are not for untrusted uploads. Non-images (415), truncated or corrupt files (422) and
  malformed requests (400) get ``{"error": "..."}`` like every other error.
- Uploads never touch the disk: the body is streamed into memory and multipart is parsed there by
  python-multipart's streaming parser (Starlette's form parser would spool files over 1 MB to a temporary file).
- Inference is serialised by the Predictor's lock; decoding and encoding run in worker threads, at most
  ``max_jobs`` images at a time, so a burst of large uploads cannot hold many full-size images in memory at once.

Example:
    >>> from fastapi.testclient import TestClient  # doctest: +SKIP
    >>> client = TestClient(create_app("best.pt"))  # doctest: +SKIP
    >>> client.post("/predict", files={"file": open("cat.jpg", "rb")}).json()["classes"]  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hmac
import io
import ipaddress
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from mobileseg._version import __version__
from mobileseg.config import Config, ConfigError, resolve_config
from mobileseg.data.loading import PIL_ERRORS, _to_rgb
from mobileseg.deploy.runtimes import load_predictor
from mobileseg.engine.predictor import Predictor, warn

try:
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, Field
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"mobileseg serve needs the 'serve' extra ({e.name} is missing): pip install 'mobileseg[serve]'"
    ) from e

MB = 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Pillow formats accepted from uploads (the JPEG plugin also opens phones' multi-picture MPO files).
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_PARTS = 16  # a form with more parts than this is not an upload from the page, curl or a script
# The page may only talk to its own server: this makes the "no external resources" promise enforced by the browser.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# auto_error=False: a missing header is answered by check_token, as {"error": ...} like every other error.
BEARER = HTTPBearer(auto_error=False, description="the server's token (token= / $MOBILESEG_TOKEN)")


class ApiError(Exception):
    """An error the client caused (or may retry), answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# ------------------------------------------------------------------------------------------------ schemas
class ClassShare(BaseModel):
    index: int = Field(description="value of the class in the mask (binary masks store 0/255 in the PNG)")
    name: str
    color: tuple[int, int, int] = Field(description="RGB colour in the overlay and in multi-class mask PNGs")
    share: float = Field(description="fraction of the image's pixels predicted as this class")


class Timing(BaseModel):
    decode_s: float = Field(description="reading and decoding the upload")
    inference_s: float = Field(description="the Predictor: resize, forward pass, upsampling to full size")
    encode_s: float = Field(description="encoding the mask PNG and the overlay")
    total_s: float = Field(description="the whole request on the server, including waiting for a free slot")


class PredictResponse(BaseModel):
    width: int = Field(description="image width after EXIF orientation (the mask has the same size)")
    height: int
    classes: list[ClassShare]
    timing: Timing
    mask_png: str = Field(description="base64 PNG: binary 0/255 grey, multi-class palette indices")
    overlay: str | None = Field(description="base64 image of the class colours blended over the upload")
    overlay_type: str | None = Field(description="media type of the overlay (image/jpeg or image/png)")


class ModelResponse(BaseModel):
    weights: str = Field(description="file name of the served model")
    backend: str
    names: list[str]
    classes: list[ClassShare] = Field(description="every class with its colour (share 0)")
    imgsz: tuple[int, int] = Field(description="model input size (H, W); images of any size are accepted")
    binary: bool
    palette: list[tuple[int, int, int]]
    conf: float = Field(description="foreground threshold of a binary model")
    tta: bool
    max_upload_mb: float
    max_pixels: int


class HealthResponse(BaseModel):
    status: str
    version: str
    auth_required: bool = Field(description="whether /predict and /model need 'Authorization: Bearer <token>'")


class ErrorResponse(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "malformed request (no image in the form, empty or incomplete upload)",
        401: "missing or wrong bearer token",
        413: "body over max_upload_mb, or image over max_pixels",
        415: "not an image, or not a supported format (JPEG, PNG, WebP, BMP, TIFF, GIF)",
        422: "truncated or corrupt image, or invalid query parameters",
    }.items()
}


# ---------------------------------------------------------------------------------------------- uploads
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
    """The uploaded image's bytes, from a multipart form or a raw ``image/*`` body, held in memory only."""
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


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> upright RGB image, refusing non-images, unsupported formats, bombs and truncated files.

    The pixel count is checked on the header (``Image.open`` is lazy) before anything is decoded.
    """
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
    try:
        im.load()  # decoding happens here: truncation and corrupt data show up now
        return _to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image refused as a decompression bomb: {e}") from None
    except PIL_ERRORS as e:
        raise ApiError(422, f"the image is truncated or corrupt: {e}") from None


def _encode(image: Image.Image, kind: Literal["png", "jpeg"]) -> bytes:
    buf = io.BytesIO()
    if kind == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _wants_png(accept: str) -> bool:
    """Whether ``Accept`` prefers ``image/png`` over JSON (ties, ``*/*`` and no header mean JSON)."""
    prefs: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        prefs[media.lower()] = q
    anything = prefs.get("*/*", 0.0)
    png = prefs.get("image/png", prefs.get("image/*", anything))
    json_q = prefs.get("application/json", prefs.get("application/*", anything))
    return png > json_q


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning to print when the server is reachable from other machines without a token, else ``None``."""
    if token or _is_loopback(host):
        return None
    return (
        f"serving on {host} without a token: anyone who can reach this machine can use the model. "
        "Set token=<secret> (or $MOBILESEG_TOKEN), or bind host=127.0.0.1."
    )


class HostCheck:
    """Pure ASGI middleware: refuse requests whose ``Host`` is not one of ``allowed`` (400, JSON).

    For a server on loopback this stops DNS rebinding: a site that re-points its own name at 127.0.0.1 still sends
    its own name as ``Host``. (Starlette's TrustedHostMiddleware does the same but answers plain text.)
    """

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in self.allowed and name not in self.allowed:
                response = JSONResponse({"error": f"host {host!r} not allowed"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------------------- app
def _page() -> str:
    return resources.files("mobileseg").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    predictor_or_weights: Predictor | str | Path,
    token: str | None = None,
    max_upload_mb: float = 20.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_jobs: int = 2,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The FastAPI application: page, API and offline docs for one model.

    Args:
        predictor_or_weights: a loaded :class:`Predictor` (shared, thread-safe) or a model file to load.
        token: bearer token required by ``/predict`` and ``/model``; ``None`` or empty = no auth.
        max_upload_mb: largest request body accepted (413 above).
        max_pixels: largest image accepted, width x height (413 above), checked before decoding.
        max_jobs: images decoded/predicted/encoded at the same time; the others wait (bounds peak memory).
        allowed_hosts: accepted ``Host`` header names (``None`` = any); ``serve`` sets loopback names on loopback.
    """
    predictor = (
        predictor_or_weights if isinstance(predictor_or_weights, Predictor) else load_predictor(predictor_or_weights)
    )
    token = token or None
    limit = int(max_upload_mb * MB)
    slots = threading.BoundedSemaphore(max(1, max_jobs))
    page = _page()
    colors = [tuple(int(v) for v in c) for c in predictor.palette[: len(predictor.names)]]

    app = FastAPIOffline(
        title="mobileseg",
        version=__version__,
        description=(
            f"Semantic segmentation with `{predictor.weights.name}`. POST an image to `/predict`. "
            + ("`/predict` and `/model` need `Authorization: Bearer <token>`." if token else "No token is set.")
        ),
    )

    def check_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        """Constant-time comparison, so response timing does not leak how much of a guess was right."""
        if token is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "this server needs a token: send 'Authorization: Bearer <token>'", challenge)
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(401, "wrong token", challenge)

    api_deps = [Depends(check_token)] if token else []

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {detail}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(page, headers={**headers, "Referrer-Policy": "no-referrer"})

    @app.get("/health", response_model=HealthResponse, tags=["server"])
    def health() -> HealthResponse:
        """Liveness. Open even with a token: it tells nothing about the model, and tells the page to ask for one."""
        return HealthResponse(status="ok", version=__version__, auth_required=token is not None)

    @app.get(
        "/model", response_model=ModelResponse, dependencies=api_deps, responses={401: ERRORS[401]}, tags=["model"]
    )
    def model() -> ModelResponse:
        """What the model predicts: classes and colours, input size, and the server's upload limits."""
        return ModelResponse(
            weights=predictor.weights.name,
            backend=predictor.kind,
            names=list(predictor.names),
            classes=[ClassShare(index=i, name=n, color=colors[i], share=0.0) for i, n in enumerate(predictor.names)],
            imgsz=predictor.imgsz,
            binary=predictor.binary,
            palette=colors,
            conf=predictor.conf,
            tta=predictor.tta,
            max_upload_mb=max_upload_mb,
            max_pixels=max_pixels,
        )

    def run(data: bytes, overlay: str, started: float) -> tuple[PredictResponse, bytes]:
        """Decode, predict, encode: CPU work, run in a worker thread at most ``max_jobs`` at a time."""
        with slots:
            t0 = time.perf_counter()
            image = decode_image(data, max_pixels)
            t1 = time.perf_counter()
            result = predictor.predict_image(image)
            t2 = time.perf_counter()
            mask_png = _encode(predictor.mask_image(result.mask), "png")
            over = None if overlay == "none" else _encode(predictor.overlay_image(image, result.mask), overlay)  # type: ignore[arg-type]
            t3 = time.perf_counter()
        classes = [
            ClassShare(index=i, name=n, color=colors[i], share=result.shares.get(n, 0.0))
            for i, n in enumerate(predictor.names)
        ]
        response = PredictResponse(
            width=result.width,
            height=result.height,
            classes=classes,
            timing=Timing(decode_s=t1 - t0, inference_s=result.seconds, encode_s=t3 - t2, total_s=t3 - started),
            mask_png=base64.b64encode(mask_png).decode("ascii"),
            overlay=None if over is None else base64.b64encode(over).decode("ascii"),
            overlay_type=None if over is None else f"image/{overlay}",
        )
        return response, mask_png

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=api_deps,
        tags=["model"],
        responses={
            200: {"content": {"image/png": {}}, "description": "JSON, or the mask PNG with Accept: image/png"},
            **ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def predict(
        request: Request,
        fmt: Literal["json", "png"] | None = Query(
            None, alias="format", description="response format; default: JSON unless Accept prefers image/png"
        ),
        overlay: Literal["jpeg", "png", "none"] = Query("jpeg", description="overlay encoding in the JSON"),
    ) -> Any:
        """Segment one image at its original size.

        Send it as multipart/form-data (field `file`) or as the raw body with an image/* Content-Type. The
        mask PNG has the image's size (after EXIF orientation): binary models 0/255 grey, multi-class models
        class indices with the palette.
        """
        started = time.perf_counter()
        data = await read_upload(request, limit)
        as_png = fmt == "png" or (fmt is None and _wants_png(request.headers.get("accept", "")))
        result, mask_png = await run_in_threadpool(run, data, "none" if as_png else overlay, started)
        if as_png:
            headers = {
                "X-Image-Size": f"{result.width}x{result.height}",
                "X-Inference-Seconds": f"{result.timing.inference_s:.4f}",
            }
            return Response(mask_png, media_type="image/png", headers=headers)
        return result

    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=list(allowed_hosts))
    app.state.predictor = predictor
    return app


# --------------------------------------------------------------------------------------------------- command
def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (uvicorn listens on it); port 0 picks a free one, and the caller learns which."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e} (pick another port=)") from None
    sock.set_inheritable(True)
    return sock


def serve(cfg: Config | dict[str, Any] | str | None = None, **overrides: Any) -> None:
    """Serve ``weights`` over HTTP until interrupted (``mobileseg serve weights=best.pt [host=] [port=]``).

    ``conf``/``tta``/``device``/``threads`` apply as for ``predict``. Prints the page's URL (with the real port
    when ``port=0``) before it starts answering.
    """
    import uvicorn

    from mobileseg.engine.runtime import prepare

    cfg = resolve_config(cfg, overrides)
    rt, sc = cfg.runtime, cfg.serve
    if not rt.weights:
        raise ConfigError("no model given: pass weights=<best.pt or model.onnx>")
    token = sc.token or os.environ.get("MOBILESEG_TOKEN", "").strip() or None
    _, device, threads = prepare(rt)
    predictor = load_predictor(rt.weights, device=device, conf=cfg.predict.conf, tta=cfg.predict.tta, threads=threads)
    message = exposure_warning(sc.host, token)
    if message:
        warn(message)
    allowed = list(LOOPBACK_NAMES) if _is_loopback(sc.host) else None
    app = create_app(predictor, token, sc.max_upload_mb, sc.max_pixels, allowed_hosts=allowed)
    sock = bind_socket(sc.host, sc.port)
    port = sock.getsockname()[1]
    shown = f"[{sc.host.strip('[]')}]" if ":" in sc.host else sc.host
    print(
        f"mobileseg serve: {predictor.weights.name} ({predictor.kind}, {threads} threads)"
        f"{', token required' if token else ''}\n"
        f"  page: http://{shown}:{port}/   API docs: http://{shown}:{port}/docs   Ctrl-C stops",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        log_level="info" if rt.verbose else "warning",
        access_log=rt.verbose,
        timeout_keep_alive=5,
        server_header=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["ApiError", "MemoryForm", "create_app", "decode_image", "exposure_warning", "serve"]
