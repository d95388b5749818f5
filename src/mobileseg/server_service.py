"""One request's work for ``mobileseg serve``: decode the upload, predict, encode the mask and the overlay.

:class:`Service` holds the model and the server's limits; its :meth:`~Service.run` is the CPU work a request
does on one of the :class:`~mobileseg.upload.Gate`'s worker threads, timed step by step for the answer.

Example:
    >>> service = Service(predictor, 20.0, 25_000_000, 4_000_000, Gate(2, 8))  # doctest: +SKIP
    >>> answer, png = service.run(open("cat.jpg", "rb").read(), "jpeg", 0.5, time.perf_counter())  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from mobileseg.engine.predictor import Predictor
from mobileseg.server_schemas import ClassShare, PredictResponse, Timing
from mobileseg.upload import Gate, release_memory
from mobileseg.upload_decode import decode_image

TRIM_PIXELS = 2_000_000  # after decoding more pixels than this, freed memory is handed back to the OS


def _encode(image: Image.Image, kind: Literal["png", "jpeg"]) -> bytes:
    buf = io.BytesIO()
    if kind == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Service:
    """One model behind the routes: the predictor, its legend colours and the server's limits."""

    predictor: Predictor
    max_upload_mb: float
    max_pixels: int
    max_output_pixels: int
    gate: Gate

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [tuple(int(v) for v in c) for c in self.predictor.palette[: len(self.predictor.names)]]  # type: ignore[misc]

    def legend(self, shares: dict[str, float] | None = None) -> list[ClassShare]:
        colors, shares = self.colors, shares or {}
        return [
            ClassShare(index=i, name=n, color=colors[i], share=shares.get(n, 0.0))
            for i, n in enumerate(self.predictor.names)
        ]

    def overlay(self, image: Image.Image, mask: np.ndarray, alpha: float) -> Image.Image:
        """Class colours blended over ``image`` where the class is not the background; uint8 throughout.

        (Pillow's blend/composite instead of float arrays: a quarter of the memory of ``Predictor.overlay_image``.)
        """
        if alpha <= 0:
            return image
        if self.predictor.binary:
            colours = Image.new("RGB", image.size, self.colors[1])
        else:
            colours = self.predictor.mask_image(mask).convert("RGB")
        painted = Image.fromarray((mask != 0).astype(np.uint8) * 255)
        return Image.composite(Image.blend(image, colours, alpha), image, painted)

    def run(self, data: bytes, overlay: str, alpha: float, started: float) -> tuple[PredictResponse, bytes]:
        """Decode, predict, encode: CPU work, run on one of the gate's worker threads."""
        t0 = time.perf_counter()
        decoded = decode_image(data, self.max_pixels, self.max_output_pixels)
        t1 = time.perf_counter()
        result = self.predictor.predict_image(decoded.image)
        t2 = time.perf_counter()
        mask_png = _encode(self.predictor.mask_image(result.mask), "png")
        over = None
        if overlay != "none":
            over = _encode(self.overlay(decoded.image, result.mask, alpha), overlay)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        if math.prod(decoded.decoded_size) > TRIM_PIXELS:
            release_memory()  # a large decode buffer was freed: hand it back rather than keep the peak
        (ow, oh), b64 = decoded.original_size, base64.b64encode
        response = PredictResponse(
            width=result.width,
            height=result.height,
            original_width=ow,
            original_height=oh,
            scale=round(result.width / ow, 6),
            classes=self.legend(result.shares),
            timing=Timing(decode_s=t1 - t0, inference_s=result.seconds, encode_s=t3 - t2, total_s=t3 - started),
            mask_png=b64(mask_png).decode("ascii"),
            overlay=None if over is None else b64(over).decode("ascii"),
            overlay_type=None if over is None else f"image/{overlay}",
        )
        return response, mask_png
