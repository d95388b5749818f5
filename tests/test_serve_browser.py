"""The ``mobileseg serve`` page in a real browser: Debian's Chromium, headless, driven by Playwright.

A real server (``python -m mobileseg serve ... token=...``, on 127.0.0.1 with a free port) serves a tiny random
model; the test types the token into the page, checks the legend is there before any upload, uploads a pets photo
with the file picker and another by drag and drop, tries the bundled example, and checks that the image and the
mask appear at the upload's size and aspect ratio, laid exactly over each other, the mask drawn in the legend's
colours, the image / overlay / mask views and the opacity slider, the download link, an error for a non-image,
that nothing is fetched from another origin, and that /docs renders offline. Screenshots go to the test's tmp
folder; their paths are printed (``pytest -s`` shows them).

Playwright cannot download its own browser here (no network), so the system Chromium is used
(``apt-get install chromium``; ``.ci/run`` does it). The test skips, saying why, only when that browser is
missing or cannot start.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serve import TOKEN, make_checkpoint, start_server, stop_server

from mobileseg.data import sample_root

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the 'serve' extra)")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LANDSCAPE, PORTRAIT = "Abyssinian_1.jpg", "Abyssinian_3.jpg"  # 256x171 and 177x256


def chromium_path() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); Playwright cannot download one offline")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        except sync_api.Error as e:
            pytest.skip(f"Chromium at {path} cannot be launched here: {str(e).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    weights = make_checkpoint(tmp_path_factory.mktemp("model") / "best.pt")
    proc, url = start_server(weights, f"token={TOKEN}", "verbose=false")
    yield url
    stop_server(proc)


def image_size(page: sync_api.Page, selector: str) -> dict[str, float]:
    return page.eval_on_selector(
        selector,
        "img => ({w: img.naturalWidth, h: img.naturalHeight, cw: img.clientWidth, ch: img.clientHeight})",
    )


def wait_for_mask(page: sync_api.Page, width: int, height: int) -> None:
    """Until both images have loaded the answer for an upload of ``width`` x ``height``."""
    page.wait_for_function(
        """([w, h]) => ['#image', '#mask'].every(s => {
             const img = document.querySelector(s);
             return img.complete && img.naturalWidth === w && img.naturalHeight === h;
           })""",
        arg=[width, height],
        timeout=60_000,
    )


def mask_colours(page: sync_api.Page) -> list[list[int]]:
    """The distinct (R, G, B, A) values of the displayed mask image, read back through a canvas."""
    return page.evaluate(
        """() => {
             const img = document.querySelector('#mask');
             const canvas = document.createElement('canvas');
             canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
             const ctx = canvas.getContext('2d');
             ctx.drawImage(img, 0, 0);
             const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
             const seen = new Set();
             for (let i = 0; i < d.length; i += 4) seen.add([d[i], d[i + 1], d[i + 2], d[i + 3]].join(','));
             return [...seen].map(s => s.split(',').map(Number));
           }"""
    )


def test_page_end_to_end(browser, server, tmp_path):
    images = sample_root() / "images"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    page.goto(server)
    # The server has a token: the page loads without it, then asks for it.
    page.wait_for_selector("#token-box.shown")
    assert "token" in page.inner_text("#status").lower()
    page.fill("#token", "not-the-token")
    page.click("#token-save")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('wrong token')")
    page.fill("#token", TOKEN)
    page.click("#token-save")
    page.wait_for_function("() => document.querySelector('#model-info').textContent.includes('best.pt')")
    assert "background, pet" in page.inner_text("#model-info")
    # The legend is there before any upload: every class with its colour.
    legend = page.locator("#legend tbody tr")
    assert legend.count() == 2 and legend.nth(1).inner_text().startswith("pet")
    swatches = page.eval_on_selector_all("#legend .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    colours = [[int(v) for v in c[4:-1].split(",")] for c in swatches]  # "rgb(r, g, b)"
    assert len(colours) == 2 and colours[0] != colours[1]

    # Upload with the file picker: the image and the mask at the photo's own size, the mask laid over the image.
    page.set_input_files("#file-input", str(images / LANDSCAPE))
    wait_for_mask(page, 256, 171)
    for selector in ("#image", "#mask"):
        size = image_size(page, selector)
        assert (size["w"], size["h"]) == (256, 171)
        assert abs(size["cw"] / size["ch"] - 256 / 171) < 0.02, size  # displayed undistorted
    image_box, mask_box = page.locator("#image").bounding_box(), page.locator("#mask").bounding_box()
    assert all(abs(image_box[k] - mask_box[k]) < 1 for k in ("x", "y", "width", "height")), (image_box, mask_box)
    rows = [legend.nth(i).inner_text() for i in range(2)]
    assert rows[0].startswith("background") and rows[1].startswith("pet") and all("%" in r for r in rows)

    # Overlay view (the default): the classes in the legend's colours, the background see-through, at the
    # slider's opacity; the mask view is opaque, the image view hides the mask.
    assert page.is_checked("#view-overlay")
    assert all(c[:3] == colours[1] and c[3] == 255 or c[3] == 0 for c in mask_colours(page)), mask_colours(page)
    assert page.eval_on_selector("#mask", "e => getComputedStyle(e).opacity") == "0.5"
    page.fill("#opacity", "80")
    assert page.eval_on_selector("#mask", "e => getComputedStyle(e).opacity") == "0.8"
    assert page.inner_text("#opacity-value") == "80 %"
    page.click("label:has(#view-mask)")
    page.wait_for_function("() => document.querySelector('#viewer').className === 'view-mask'")
    page.wait_for_function("() => document.querySelector('#mask').complete")
    opaque = mask_colours(page)
    assert all(c[3] == 255 and c[:3] in colours for c in opaque), opaque
    assert page.eval_on_selector("#mask", "e => getComputedStyle(e).opacity") == "1"
    page.click("label:has(#view-image)")
    assert page.eval_on_selector("#mask", "e => getComputedStyle(e).visibility") == "hidden"
    page.click("label:has(#view-overlay)")
    assert page.inner_text("#image-size") == "256 × 171 px"
    assert page.inner_text("#timing").endswith("ms")
    download = page.locator("#download")
    assert download.get_attribute("download") == "Abyssinian_1_mask.png"
    assert download.get_attribute("href").startswith("data:image/png;base64,")
    screenshot = tmp_path / "serve_page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot of the page: {screenshot}")

    # The bundled example, no file needed.
    page.click("#example")
    page.wait_for_function("() => document.querySelector('#file-name').textContent === 'Bengal_2.jpg'")
    wait_for_mask(page, 256, 215)

    # Drag and drop a portrait photo: the mask follows the new aspect ratio.
    data = base64.b64encode((images / PORTRAIT).read_bytes()).decode()
    page.evaluate(
        """([b64, name]) => {
             const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
             document.querySelector('#drop').dispatchEvent(
               new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
           }""",
        [data, PORTRAIT],
    )
    wait_for_mask(page, 177, 256)
    assert page.locator("#download").get_attribute("download") == "Abyssinian_3_mask.png"

    # A file that is not an image: a readable error on the page, the last result left in place.
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is text, not a photo")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#status.error")
    assert "not an image" in page.inner_text("#status")
    assert image_size(page, "#mask")["w"] == 177

    # Everything the page loaded came from this server (or was a data: URL it built).
    assert requests and all(u.startswith(server) or u.startswith("data:") for u in requests), requests
    # The only console errors are the failed requests the test provoked (wrong token, non-image).
    assert all("401" in e or "415" in e for e in console_errors), console_errors


def test_docs_render_offline(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server + "docs")
    page.wait_for_selector(".swagger-ui .information-container .title", timeout=60_000)
    assert "mobileseg" in page.inner_text(".swagger-ui .information-container .title")
    page.wait_for_function("() => document.body.innerText.includes('/predict')")
    assert all(u.startswith(server) or u.startswith("data:") for u in requests), requests
    screenshot = tmp_path / "serve_docs.png"
    page.screenshot(path=str(screenshot))
    print(f"\nscreenshot of /docs: {screenshot}")
