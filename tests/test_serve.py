"""``mobileseg serve``: every route, every rejection, JSON and PNG answers, concurrency, no upload on disk.

The API is driven in-process with FastAPI's TestClient (no socket); one test starts the real command
(``python -m mobileseg serve port=0``) to cover the config, the socket and uvicorn. Models are tiny random-init
checkpoints at 64x64: what is checked is the plumbing (sizes, classes, which mask belongs to which request),
which a trained model would not make any more convincing.
"""

from __future__ import annotations

import base64
import io
import os
import queue
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from helpers import make_checkpoint  # noqa: E402

from mobileseg import __version__  # noqa: E402
from mobileseg.config import ConfigError, load_config  # noqa: E402
from mobileseg.deploy.runtimes import load_predictor  # noqa: E402
from mobileseg.engine.predictor import Predictor  # noqa: E402
from mobileseg.server import create_app, exposure_warning  # noqa: E402
from mobileseg.upload_decode import decode_image, output_size  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------------------------------------- helpers


def image_bytes(h: int, w: int, fmt: str = "PNG", seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # Smooth blobs rather than pure noise, so the masks have structure that a mix-up between images would change.
    yy, xx = np.mgrid[0:h, 0:w]
    arr[(yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 3) ** 2 / (w / 4) ** 2 < 1] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def decode_png(data: bytes | str) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG"
        im.load()
        return im


def flat_png(width: int, height: int) -> bytes:
    """A one-colour PNG: many pixels in a few hundred bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buf, format="PNG")
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height``: a decompression bomb's cheap signature."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    body = struct.pack(">II", width, height) + bytes(data[24:29])  # IHDR: width, height, depth, colour, ...
    data[16:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return bytes(data)


def post_image(client: TestClient, data: bytes, name: str = "a.png", ctype: str = "image/png", **kw):
    return client.post("/predict", files={"file": (name, data, ctype)}, **kw)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def binary_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "best.pt")


@pytest.fixture(scope="module")
def predictor(binary_ckpt) -> Predictor:
    return load_predictor(binary_ckpt, threads=1)


@pytest.fixture(scope="module")
def client(predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor)) as c:
        yield c


@pytest.fixture(scope="module")
def secured(predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, token=TOKEN)) as c:
        yield c


# ------------------------------------------------------------------------------------------------- routes
def test_page_health_and_offline_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    elements = ("file-input", "drop", "image", "mask", "legend", "download", "opacity", "example", "view-mask")
    for element in (f'id="{e}"' for e in elements):
        assert element in page.text
    # No CDN, font or script from elsewhere: nothing in the page names another origin.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    assert client.get("/health").json() == {"status": "ok", "version": __version__, "auth_required": False}

    docs = client.get("/docs")
    assert docs.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # served here, not by a CDN
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    redoc = client.get("/redoc").text
    assert "/static-offline-docs/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and {"/health", "/model", "/predict"} <= set(spec["paths"])


def test_model_route(client, predictor):
    info = client.get("/model").json()
    assert info["names"] == ["background", "pet"] and info["binary"] is True
    assert info["imgsz"] == [64, 64] and info["weights"] == "best.pt" and info["backend"] == "torch"
    assert info["palette"] == [list(c) for c in predictor.palette[:2]]
    assert [c["name"] for c in info["classes"]] == info["names"]
    assert info["max_upload_mb"] == 20 and info["max_pixels"] == 25_000_000
    assert (info["max_output_pixels"], info["max_concurrent"], info["max_queue"]) == (4_000_000, 2, 8)
    # The legend: every class with the colour the overlay and the page draw it in.
    legend = [(c["index"], c["name"], c["color"]) for c in info["classes"]]
    assert legend == [(0, "background", list(predictor.palette[0])), (1, "pet", list(predictor.palette[1]))]


def test_predict_json_png_and_raw_body(client, predictor):
    data = image_bytes(50, 70, "JPEG")
    expected = predictor.predict_image(Image.open(io.BytesIO(data))).mask

    r = post_image(client, data, "cat.jpg", "image/jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    j = r.json()
    assert (j["width"], j["height"]) == (70, 50)
    assert [c["name"] for c in j["classes"]] == ["background", "pet"]
    assert abs(sum(c["share"] for c in j["classes"]) - 1) < 1e-6
    assert j["classes"][1]["share"] == pytest.approx(expected.mean())
    assert all(j["timing"][k] >= 0 for k in ("decode_s", "inference_s", "encode_s")) and j["timing"]["total_s"] > 0
    mask = decode_png(j["mask_png"])
    assert mask.size == (70, 50) and mask.mode == "L"
    np.testing.assert_array_equal(np.asarray(mask) // 255, expected)
    assert j["overlay_type"] == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(j["overlay"]))) as overlay:
        assert overlay.format == "JPEG" and overlay.size == (70, 50)

    # The mask PNG itself: by Accept, by ?format=png, and for a raw image body.
    by_accept = post_image(client, data, "cat.jpg", "image/jpeg", headers={"Accept": "image/png"})
    by_query = post_image(client, data, "cat.jpg", "image/jpeg", params={"format": "png"})
    raw = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg", "Accept": "image/png"})
    for r in (by_accept, by_query, raw):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-image-size"] == "70x50"
        assert r.content == base64.b64decode(j["mask_png"])
    # JSON wins ties and */*; a PNG overlay, or none, on request.
    assert post_image(client, data, headers={"Accept": "*/*"}).headers["content-type"] == "application/json"
    png_overlay = post_image(client, data, params={"overlay": "png"}).json()
    assert png_overlay["overlay_type"] == "image/png" and decode_png(png_overlay["overlay"]).size == (70, 50)
    assert post_image(client, data, params={"overlay": "none"}).json()["overlay"] is None


def test_multiclass_mask_uses_palette(tmp_path):
    predictor = load_predictor(make_checkpoint(tmp_path / "mc.pt", num_classes=3), threads=1)
    data = image_bytes(40, 56, "PNG", mode="L")  # greyscale uploads are converted, as in predict
    expected = predictor.predict_image(Image.open(io.BytesIO(data))).mask
    with TestClient(create_app(predictor)) as client:
        assert client.get("/model").json()["palette"] == [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
        j = post_image(client, data).json()
    mask = decode_png(j["mask_png"])
    assert mask.mode == "P" and mask.size == (56, 40) and mask.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
    np.testing.assert_array_equal(np.asarray(mask), expected)
    assert [c["color"] for c in j["classes"]] == [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def test_exif_orientation_is_applied(client):
    """A phone photo stored sideways: the mask has the size the image is displayed at."""
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    j = post_image(client, buf.getvalue(), "phone.jpg", "image/jpeg").json()
    assert (j["width"], j["height"]) == (30, 80) and decode_png(j["mask_png"]).size == (30, 80)


def test_overlay_opacity(client):
    """alpha=0 gives the image itself (the page's plain view); alpha=1 paints the class colour where predicted."""
    data = image_bytes(40, 60, "PNG", seed=3)
    plain = post_image(client, data, params={"overlay": "png", "alpha": 0}).json()
    np.testing.assert_array_equal(np.asarray(decode_png(plain["overlay"])), np.asarray(Image.open(io.BytesIO(data))))
    full = post_image(client, data, params={"overlay": "png", "alpha": 1}).json()
    painted = np.asarray(decode_png(full["mask_png"])) > 0
    assert 0 < painted.mean() < 1  # the tiny model paints part of the image, so both branches are checked
    overlay = np.asarray(decode_png(full["overlay"]))
    assert (overlay[painted] == full["classes"][1]["color"]).all()
    np.testing.assert_array_equal(overlay[~painted], np.asarray(Image.open(io.BytesIO(data)))[~painted])
    assert_error(post_image(client, data, params={"alpha": 2}), 422, "alpha")


def test_example_photo(client, secured):
    r = client.get("/example")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        size = im.size
    j = post_image(client, r.content, "example.jpg", "image/jpeg").json()
    assert (j["width"], j["height"]) == size and j["scale"] == 1.0
    assert secured.get("/example").status_code == 200  # open like the page: it is the page's own content


# ------------------------------------------------------------------------------------------- large images
def solid_jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """A large JPEG in a few kB (one colour and a gradient band), optionally with an EXIF orientation."""
    im = Image.new("RGB", (width, height), (200, 120, 40))
    im.paste(Image.linear_gradient("L").resize((width, height // 4)).convert("RGB"), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=70, exif=exif)
    return buf.getvalue()


def test_large_images_are_decoded_at_reduced_size():
    """Over max_output_pixels: a JPEG is decoded at 1/2..1/8 scale directly; a PNG is shrunk right after decoding."""
    assert output_size(6000, 6000, 4_000_000) == (2000, 2000) and output_size(640, 480, 4_000_000) == (640, 480)
    jpeg = decode_image(solid_jpeg(4000, 3000), max_pixels=25_000_000, max_output_pixels=500_000)
    assert jpeg.decoded_size == (1000, 750)  # draft mode: the full 12 MP never existed in memory
    assert jpeg.image.size == output_size(4000, 3000, 500_000) == (816, 612) and jpeg.image.mode == "RGB"
    assert jpeg.original_size == (4000, 3000) and jpeg.scale == pytest.approx(816 / 4000)
    turned = decode_image(solid_jpeg(4000, 3000, orientation=6), 25_000_000, 500_000)
    assert turned.original_size == (3000, 4000) and turned.image.size == (612, 816)
    png = decode_image(flat_png(3000, 2000), 25_000_000, 600_000)
    assert png.decoded_size == (3000, 2000) and png.image.size == output_size(3000, 2000, 600_000) == (948, 632)
    small = decode_image(flat_png(300, 200), 25_000_000, 600_000)
    assert small.image.size == small.decoded_size == small.original_size == (300, 200) and small.scale == 1
    # Palette, 16-bit grey and RGBA uploads are reduced too, and come out RGB (16-bit values scaled to 8 bits).
    for im, pixel in ((Image.new("P", (1200, 900), 3), None), (Image.new("I;16", (1200, 900), 40000), (156,) * 3)):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out = decode_image(buf.getvalue(), 25_000_000, 100_000).image
        assert out.size == output_size(1200, 900, 100_000) and out.mode == "RGB"
        assert pixel is None or out.getpixel((5, 5)) == pixel


def test_large_image_answer_is_reduced_and_says_so(predictor):
    with TestClient(create_app(predictor, max_output_pixels=600_000)) as client:
        j = post_image(client, flat_png(3000, 2000)).json()
        assert (j["width"], j["height"], j["original_width"], j["original_height"]) == (948, 632, 3000, 2000)
        assert j["scale"] == pytest.approx(948 / 3000, abs=1e-6)
        assert decode_png(j["mask_png"]).size == (948, 632)
        with Image.open(io.BytesIO(base64.b64decode(j["overlay"]))) as overlay:
            assert overlay.size == (948, 632)
        r = post_image(client, flat_png(3000, 2000), params={"format": "png"})
        assert r.headers["x-image-size"] == "948x632" and r.headers["x-original-size"] == "3000x2000"
        assert decode_png(r.content).size == (948, 632)
        small = post_image(client, flat_png(300, 200)).json()
        assert (small["width"], small["original_width"], small["scale"]) == (300, 300, 1.0)


def held_predictor(binary_ckpt, monkeypatch) -> tuple[Predictor, threading.Event, threading.Event]:
    """A predictor whose inference waits for ``release``; ``entered`` is set once a request is inside it."""
    predictor = load_predictor(binary_ckpt, threads=1)
    entered, release = threading.Event(), threading.Event()
    real = predictor.predict_image

    def slow(image):
        entered.set()
        assert release.wait(60)
        return real(image)

    monkeypatch.setattr(predictor, "predict_image", slow)
    return predictor, entered, release


def test_busy_server_answers_503(binary_ckpt, monkeypatch):
    """One request working, one waiting: a third is refused at once with a JSON error and Retry-After."""
    predictor, entered, release = held_predictor(binary_ckpt, monkeypatch)
    app = create_app(predictor, max_concurrent=1, max_queue=1)
    data = image_bytes(20, 30)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        assert client.get("/model").json()["max_queue"] == 1
        first = pool.submit(post_image, client, data)
        assert entered.wait(60)
        second = pool.submit(post_image, client, data)
        deadline = time.monotonic() + 60
        while app.state.service.gate.admitted < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            busy = post_image(client, data)
            assert_error(busy, 503, "busy", "max_concurrent=1", "max_queue=1")
            assert 1 <= int(busy.headers["retry-after"]) <= 60
            assert client.get("/health").status_code == 200  # only the work is limited
        finally:
            release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert app.state.service.gate.admitted == 0
        assert post_image(client, data).status_code == 200  # free again


def test_large_uploads_take_at_most_half_the_places(binary_ckpt, monkeypatch):
    """Large images (over max_output_pixels) have their own lane: while it is full, ordinary photos still get in."""
    predictor, entered, release = held_predictor(binary_ckpt, monkeypatch)
    app = create_app(predictor, max_output_pixels=100_000, max_concurrent=1, max_queue=1)  # 2 places, 1 large
    large, small = flat_png(600, 400), image_bytes(20, 30)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post_image, client, large)
        assert entered.wait(60)
        try:
            assert_error(post_image(client, large), 503, "busy", "large images")
            ordinary = pool.submit(post_image, client, small)  # the other place, on the ordinary lane
            deadline = time.monotonic() + 60
            while app.state.service.gate.admitted < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            release.set()
        assert (first.result().json()["original_width"], first.result().json()["width"]) == (600, 387)
        assert ordinary.result().status_code == 200


# --------------------------------------------------------------------------------------------- rejections
def test_bad_uploads_are_rejected_with_json_errors(client):
    jpeg = image_bytes(60, 80, "JPEG")
    assert_error(post_image(client, b"this is text, not an image", "notes.png"), 415, "not an image")
    assert_error(post_image(client, jpeg[: len(jpeg) // 2], "cut.jpg", "image/jpeg"), 422, "truncated")
    assert_error(post_image(client, image_bytes(20, 20, "PPM"), "a.ppm"), 415, "supported format")
    assert_error(post_image(client, b""), 400, "empty")
    # A form must carry the image as 'file' (or 'image'), or as its only file; text fields alone are no upload.
    two_files = {"a": ("a.png", image_bytes(8, 8)), "b": ("b.png", image_bytes(9, 9))}
    assert_error(client.post("/predict", files=two_files), 400, "'file'")
    text_only = client.post("/predict", data={"note": "hi"}, files={"empty": ("", b"")})
    assert_error(text_only, 400)
    assert post_image(client, image_bytes(8, 8), "x.png").status_code == 200
    assert client.post("/predict", files={"picture": ("p.png", image_bytes(8, 8))}).status_code == 200
    cut_form = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + jpeg[:100]
    r = client.post("/predict", content=cut_form, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(r, 400, "incomplete")
    r = client.post("/predict", json={"image": "cat.jpg"})
    assert_error(r, 415, "multipart/form-data")
    assert_error(client.post("/predict", params={"format": "gif"}, content=jpeg), 422, "format")
    assert_error(client.get("/no-such-page"), 404)
    assert_error(client.get("/predict"), 405)


def test_size_and_pixel_limits(predictor):
    app = create_app(predictor, max_upload_mb=0.05, max_pixels=100_000)  # 52 kB, 0.1 MP
    big = os.urandom(80_000)
    with TestClient(app) as client:
        # Content-Length says too much: refused before the body is read.
        assert_error(post_image(client, big, "big.png"), 413, "max_upload_mb")
        # No Content-Length (chunked): refused while reading.
        chunks = iter([big[i : i + 8192] for i in range(0, len(big), 8192)])
        r = client.post("/predict", content=chunks, headers={"Content-Type": "image/png"})
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "over the limit", "max_upload_mb")
        # Small files whose header claims many pixels: over our limit, and over Pillow's bomb limit.
        assert_error(post_image(client, flat_png(400, 300)), 413, "max_pixels", "400x300")
        assert_error(post_image(client, png_with_size(8000, 8000)), 413, "max_pixels")
        assert_error(post_image(client, png_with_size(30000, 30000)), 413)
        assert post_image(client, flat_png(200, 300)).status_code == 200  # 60 kpx in a few hundred bytes: fine
    with TestClient(create_app(predictor, max_pixels=10**9)) as client:  # only Pillow's own bomb check is left
        assert_error(post_image(client, png_with_size(30000, 30000)), 413, "decompression bomb")


def test_token(secured):
    data = image_bytes(32, 48)
    assert secured.get("/health").json()["auth_required"] is True
    assert secured.get("/").status_code == 200  # the page loads, then asks for the token
    for call in (lambda h: secured.get("/model", headers=h), lambda h: post_image(secured, data, headers=h)):
        missing = call({})
        assert_error(missing, 401, "Bearer")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(call({"Authorization": "Bearer wrong"}), 401, "wrong token")
        assert_error(call({"Authorization": f"Basic {TOKEN}"}), 401)
        assert call(AUTH).status_code == 200
        assert call({"Authorization": f"bearer {TOKEN}"}).status_code == 200
    spec = secured.get("/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_host_check(predictor):
    app = create_app(predictor, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
        assert client.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
        assert_error(client.get("/health", headers={"Host": "evil.example:8000"}), 400, "evil.example")


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "tok") is None
    assert "without a token" in exposure_warning("0.0.0.0", None)
    assert "without a token" in exposure_warning("192.168.1.5", None)


def test_serve_config_keys(monkeypatch):
    cfg = load_config(overrides=["host=0.0.0.0", "port=9001", "token=abc", "max_upload_mb=5", "max_pixels=1000"])
    assert (cfg.serve.host, cfg.serve.port, cfg.serve.token) == ("0.0.0.0", 9001, "abc")
    assert (cfg.serve.max_upload_mb, cfg.serve.max_pixels) == (5, 1000)
    cfg = load_config(overrides=["max_output_pixels=1000000", "max_concurrent=3", "max_queue=0"])
    assert (cfg.serve.max_output_pixels, cfg.serve.max_concurrent, cfg.serve.max_queue) == (1_000_000, 3, 0)
    with pytest.raises(ConfigError, match="max_concurrent"):
        load_config(overrides=["max_concurrent=0"])
    defaults = load_config().serve
    assert (defaults.host, defaults.port, defaults.token, defaults.max_upload_mb) == ("127.0.0.1", 8000, None, 20)
    assert load_config(overrides=["token="]).serve.token is None
    with pytest.raises(ConfigError, match="token must be text"):
        load_config(overrides=["token=0123"])  # YAML reads it as 83: refused, not silently changed
    monkeypatch.setenv("MOBILESEG_TOKEN", "from-env")
    assert load_config().serve.token is None  # read by the server, never copied into a saved config


# --------------------------------------------------------------------------------------------- concurrency
def test_concurrent_requests_get_their_own_answers(predictor):
    sizes = [(24 + 7 * i, 90 - 3 * i) for i in range(20)]  # all different, so a swapped answer shows
    uploads = [image_bytes(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    expected = [predictor.predict_image(Image.open(io.BytesIO(d))).mask for d in uploads]

    def ask(i: int) -> np.ndarray:
        if i % 2:  # half as PNG, half as JSON
            r = post_image(client, uploads[i], f"{i}.png", headers={"Accept": "image/png"})
            assert r.status_code == 200, r.text
            return np.asarray(decode_png(r.content)) // 255
        r = post_image(client, uploads[i], f"{i}.png")
        assert r.status_code == 200, r.text
        assert (r.json()["height"], r.json()["width"]) == sizes[i]
        return np.asarray(decode_png(r.json()["mask_png"])) // 255

    # A queue for all of them: this test is about answers reaching the right client (admission is tested below).
    with TestClient(create_app(predictor, max_queue=20)) as client, ThreadPoolExecutor(20) as pool:
        got = list(pool.map(ask, range(20)))
    for i, mask in enumerate(got):
        assert mask.shape == sizes[i]
        np.testing.assert_array_equal(mask, expected[i])


# ------------------------------------------------------------------------------------------------ no disk
def test_uploads_never_touch_the_disk(client, monkeypatch, tmp_path):
    """A 3 MB upload (Starlette's form parser spools anything over 1 MB to a temporary file) stays in memory."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was created for an upload")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    import starlette.formparsers

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    assert len(data) > 2_900_000
    r = post_image(client, data, "big.png", headers={"Accept": "image/png"})
    assert r.status_code == 200 and decode_png(r.content).size == (1000, 1000)
    assert list(spool.iterdir()) == []


# ---------------------------------------------------------------------------------------- the real command
def start_server(weights: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``python -m mobileseg serve weights=... port=0 ...`` in a subprocess; returns it and the page's URL.

    ``port=0`` lets the OS pick a free port (no race with other tests); the command prints the URL it got.
    """
    command = [sys.executable, "-m", "mobileseg", "serve", f"weights={weights}", "port=0", "threads=1", *args]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        match = re.search(r"page: (http://\S+/)", line)
        if match:
            url = match.group(1)
            import httpx

            while time.monotonic() < deadline:  # the socket is bound; uvicorn listens a moment later
                try:
                    if httpx.get(url + "health", timeout=2, trust_env=False).status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("mobileseg serve did not start:\n" + "".join(seen))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_cli_serves_on_loopback_with_env_token(binary_ckpt):
    import httpx

    proc, url = start_server(binary_ckpt, "verbose=false", env={"MOBILESEG_TOKEN": TOKEN})
    try:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
            assert http.get("health").json()["auth_required"] is True
            assert http.get("model").status_code == 401
            assert http.get("model", headers=AUTH).json()["names"] == ["background", "pet"]
            r = http.post(
                "predict", headers={**AUTH, "Accept": "image/png"}, files={"file": ("a.png", image_bytes(33, 44))}
            )
            assert r.status_code == 200 and decode_png(r.content).size == (44, 33)
            assert http.get("health", headers={"Host": "attacker.example"}).status_code == 400
    finally:
        stop_server(proc)
