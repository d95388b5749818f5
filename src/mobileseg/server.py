"""``mobileseg serve``: a web page and an HTTP API around one :class:`~mobileseg.engine.predictor.Predictor`.

Routes (``create_app`` builds them; ``serve`` runs them with uvicorn):

- ``GET /``: a self-contained page (inline CSS and vanilla JS, no CDN): drop or pick an image, or try the bundled
  example; see the image, the overlay (opacity slider) or the mask in the class colours, the legend, the inference
  time, and download the mask PNG.
- ``POST /predict``: one image, as ``multipart/form-data`` (field ``file``) or as the raw body with an ``image/*``
  Content-Type. Answers JSON (class shares, timing, sizes, mask PNG and overlay as base64) or, with
  ``Accept: image/png`` or ``?format=png``, the mask PNG itself.
- ``GET /model``: class names and colours (the legend), input size, binary or not, and the server's limits.
- ``GET /example``: a bundled sample photo (JPEG), so the page can be tried without an image at hand.
- ``GET /health``: liveness, and whether the API wants a token (so the page knows to ask for one).
- ``GET /docs`` (Swagger UI), ``GET /redoc`` and ``GET /openapi.json``: the API reference, served from the
  ``fastapi-offline`` package's bundled copies (FastAPI's default pages load a CDN), so they work offline.

Output size: the mask and overlay have the image's size (after EXIF orientation) up to ``max_output_pixels``
(4 MP by default); a larger image is reduced, aspect ratio kept, while it is decoded, and everything is answered at
that reduced size. The JSON says so: ``width``/``height`` are the mask's size, ``original_width``/``original_height``
the upload's, ``scale`` their ratio (1.0 when nothing was reduced); the PNG answer carries ``X-Image-Size`` and
``X-Original-Size``. Why: the model sees ``imgsz`` only, so full-size masks of a 36 MP upload add nothing but
gigabytes (a 35 KB 6000x6000 PNG took the server from 0.8 to 2.7 GB of memory when it was kept at full size).

Safety, and why:

- Loopback (``127.0.0.1``) unless ``host=`` says otherwise; binding elsewhere without a token prints a warning.
  On loopback the ``Host`` header must name loopback too, so a web page on another site cannot reach the server
  through DNS rebinding.
- ``token=`` (or ``$MOBILESEG_TOKEN``): every API call (``/predict``, ``/model``) then needs
  ``Authorization: Bearer <token>``; compared in constant time. The page, the example, ``/health`` and the docs
  stay open: they reveal nothing about the model, and the page must load to let the user type the token in.
- Request bodies are capped (``max_upload_mb``) before and while reading (413); images are capped in pixels
  (``max_pixels``) from their header, before any pixel is decoded (413); see :mod:`mobileseg.upload`.
- Bounded work: at most ``max_concurrent + max_queue`` requests are admitted (counted on arrival, so waiting ones
  hold only their upload's bytes); beyond that a request is answered at once, before its body is read, with 503
  and a ``Retry-After`` estimate. The work runs on the server's own threads: ``max_concurrent`` for ordinary
  images and a lane of ``max_concurrent // 2`` (at least 1) for images over ``max_output_pixels``, which may also
  hold at most half of the admitted places, so a burst of huge uploads cannot shut ordinary photos out. Peak
  memory is then about the baseline + the large lane x (one decode buffer of at most ``max_pixels``) + all
  workers x (the work on ``max_output_pixels``) + the admitted uploads' bytes, whatever the traffic; freed decode
  buffers are handed back to the OS (``malloc_trim``). ``benchmarks/serve_load.py`` measures it: 4 concurrent
  6000x6000 PNGs with 20 photos, max_pixels=40 MP: peak 1.35 GB (5.1 GB before), photos' p95 0.8 s (38 s before).
- Only common raster formats are opened (JPEG, PNG, WebP, BMP, TIFF, GIF). Non-images (415), truncated or corrupt
  files (422) and malformed requests (400) get ``{"error": "..."}`` like every other error. Uploads never touch
  the disk.

Example:
    >>> from fastapi.testclient import TestClient  # doctest: +SKIP
    >>> client = TestClient(create_app("best.pt"))  # doctest: +SKIP
    >>> client.post("/predict", files={"file": open("cat.jpg", "rb")}).json()["classes"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from mobileseg._version import __version__
from mobileseg.config import Config, resolve_config
from mobileseg.deploy.runtimes import load_predictor
from mobileseg.engine.predictor import Predictor, warn
from mobileseg.errors import ConfigError
from mobileseg.server_access import LOOPBACK_NAMES, HostCheck, exposure_warning, is_loopback, token_dependency
from mobileseg.server_schemas import ERRORS, PREDICT_BODY, ErrorResponse, HealthResponse, ModelResponse, PredictResponse
from mobileseg.server_service import Service
from mobileseg.upload import MB, ApiError, Gate, read_upload
from mobileseg.upload_decode import DEFAULT_MAX_OUTPUT_PIXELS, header_pixels

try:
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi_offline import FastAPIOffline
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"mobileseg serve needs the 'serve' extra ({e.name} is missing): pip install 'mobileseg[serve]'"
    ) from e

# 25 MP: a 24 MP camera photo passes; the decode buffer of a PNG (decoded whole before it is reduced) stays ~100 MB.
DEFAULT_MAX_PIXELS = 25_000_000
EXAMPLE = "assets/pets_sample/images/Bengal_2.jpg"  # the photo GET /example serves (package data)
# The page may only talk to its own server: this makes the "no external resources" promise enforced by the browser.
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ------------------------------------------------------------------------------------------------- helpers
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


# ------------------------------------------------------------------------------------------------------- app
def _page() -> str:
    return resources.files("mobileseg").joinpath("static/index.html").read_text(encoding="utf-8")


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as ``{"error": message}``."""

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


def _add_open_routes(app: FastAPI, auth_required: bool) -> None:
    """The page, the example photo and /health: open even with a token (they tell nothing about the model)."""
    page = _page()

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        headers = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"}
        return HTMLResponse(page, headers={**headers, "Referrer-Policy": "no-referrer"})

    @app.get("/health", response_model=HealthResponse, tags=["server"])
    def health() -> HealthResponse:
        """Liveness. Open even with a token: it tells nothing about the model, and tells the page to ask for one."""
        return HealthResponse(status="ok", version=__version__, auth_required=auth_required)

    @app.get(
        "/example",
        tags=["server"],
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse, "description": "none bundled"}},
    )
    def example() -> Response:
        """A sample photo bundled with mobileseg, to try the page (or the API) without an image at hand."""
        photo = resources.files("mobileseg").joinpath(EXAMPLE)
        if not photo.is_file():
            raise ApiError(404, "this installation has no bundled example photo")
        name = EXAMPLE.rsplit("/", 1)[-1]
        headers = {"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "max-age=3600"}
        return Response(photo.read_bytes(), media_type="image/jpeg", headers=headers)


def _add_model_route(app: FastAPI, service: Service, deps: list[Any]) -> None:
    @app.get("/model", response_model=ModelResponse, dependencies=deps, responses={401: ERRORS[401]}, tags=["model"])
    def model() -> ModelResponse:
        """What the model predicts: the legend (classes and colours), input size, and the server's limits."""
        p = service.predictor
        return ModelResponse(
            weights=p.weights.name,
            backend=p.kind,
            names=list(p.names),
            classes=service.legend(),
            imgsz=p.imgsz,
            binary=p.binary,
            palette=service.colors,
            conf=p.conf,
            tta=p.tta,
            max_upload_mb=service.max_upload_mb,
            max_pixels=service.max_pixels,
            max_output_pixels=service.max_output_pixels,
            max_concurrent=service.gate.concurrent,
            max_queue=service.gate.queue,
        )


def _add_predict_route(app: FastAPI, service: Service, deps: list[Any]) -> None:
    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=deps,
        tags=["model"],
        responses={200: {"content": {"image/png": {}}, "description": "JSON, or the mask PNG"}, **ERRORS},
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(
        request: Request,
        fmt: Literal["json", "png"] | None = Query(
            None, alias="format", description="response format; default: JSON unless Accept prefers image/png"
        ),
        overlay: Literal["jpeg", "png", "none"] = Query("jpeg", description="overlay encoding in the JSON"),
        alpha: float = Query(0.5, ge=0, le=1, description="opacity of the class colours (0: the image itself)"),
    ) -> Any:
        """Segment one image at its own size, or reduced to `max_output_pixels` if larger (see `scale`).

        Send it as multipart/form-data (field `file`) or as the raw body with an image/* Content-Type. The mask
        PNG has the size `width` x `height`: binary models 0/255 grey, multi-class models class indices with the
        palette. Busy (max_concurrent working, max_queue waiting): 503 with Retry-After.
        """
        started = time.perf_counter()
        with service.gate.admit():
            data = await read_upload(request, int(service.max_upload_mb * MB))
            as_png = fmt == "png" or (fmt is None and _wants_png(request.headers.get("accept", "")))
            large = header_pixels(data) > service.max_output_pixels
            with service.gate.admit(large=True) if large else nullcontext():
                kind = "none" if as_png else overlay
                result, mask_png = await service.gate.run(service.run, data, kind, alpha, started, large=large)
        if as_png:
            headers = {
                "X-Image-Size": f"{result.width}x{result.height}",
                "X-Original-Size": f"{result.original_width}x{result.original_height}",
                "X-Inference-Seconds": f"{result.timing.inference_s:.4f}",
            }
            return Response(mask_png, media_type="image/png", headers=headers)
        return result


def create_app(
    predictor_or_weights: Predictor | str | Path,
    token: str | None = None,
    max_upload_mb: float = 20.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    max_concurrent: int = 2,
    max_queue: int = 8,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The FastAPI application: page, API and offline docs for one model.

    Args:
        predictor_or_weights: a loaded :class:`Predictor` (shared, thread-safe) or a model file to load.
        token: bearer token required by ``/predict`` and ``/model``; ``None`` or empty = no auth.
        max_upload_mb: largest request body accepted (413 above).
        max_pixels: largest image accepted, width x height (413 above), checked before decoding.
        max_output_pixels: larger images are reduced to this many pixels while decoded; masks come at that size.
        max_concurrent: requests decoded/predicted/encoded at the same time (bounds peak memory).
        max_queue: requests that may wait for a slot; more are answered 503 with Retry-After.
        allowed_hosts: accepted ``Host`` header names (``None`` = any); ``serve`` sets loopback names on loopback.

    Example:
        >>> app = create_app("best.pt", max_concurrent=1, max_queue=4)  # doctest: +SKIP
    """
    predictor = (
        predictor_or_weights if isinstance(predictor_or_weights, Predictor) else load_predictor(predictor_or_weights)
    )
    token = token or None
    service = Service(predictor, max_upload_mb, max_pixels, max_output_pixels, Gate(max_concurrent, max_queue))
    app = FastAPIOffline(
        title="mobileseg",
        version=__version__,
        description=(
            f"Semantic segmentation with `{predictor.weights.name}`. POST an image to `/predict`. "
            + ("`/predict` and `/model` need `Authorization: Bearer <token>`." if token else "No token is set.")
        ),
    )
    _add_error_handlers(app)
    _add_open_routes(app, token is not None)
    deps = token_dependency(token)
    _add_model_route(app, service, deps)
    _add_predict_route(app, service, deps)
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=list(allowed_hosts))
    app.state.predictor, app.state.service = predictor, service
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
    predictor = load_predictor(
        rt.weights, device=device, conf=cfg.predict.conf, tta=cfg.predict.tta, threads=threads, config=cfg
    )
    message = exposure_warning(sc.host, token)
    if message:
        warn(message)
    allowed = list(LOOPBACK_NAMES) if is_loopback(sc.host) else None
    app = create_app(
        predictor,
        token,
        sc.max_upload_mb,
        sc.max_pixels,
        sc.max_output_pixels,
        sc.max_concurrent,
        sc.max_queue,
        allowed_hosts=allowed,
    )
    sock = bind_socket(sc.host, sc.port)
    port = sock.getsockname()[1]
    shown = f"[{sc.host.strip('[]')}]" if ":" in sc.host else sc.host
    print(
        f"mobileseg serve: {predictor.weights.name} ({predictor.describe()}, {threads} threads)"
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


__all__ = ["ApiError", "create_app", "exposure_warning", "serve"]
