"""The JSON the ``mobileseg serve`` API answers with, as pydantic models: they are the OpenAPI docs' schemas too.

Example:
    >>> HealthResponse(status="ok", version="1.0", auth_required=False).model_dump()
    {'status': 'ok', 'version': '1.0', 'auth_required': False}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ClassShare(BaseModel):
    index: int = Field(description="value of the class in the mask (binary masks store 0/255 in the PNG)")
    name: str
    color: tuple[int, int, int] = Field(description="RGB colour in the overlay, the page and multi-class mask PNGs")
    share: float = Field(description="fraction of the image's pixels predicted as this class")


class Timing(BaseModel):
    decode_s: float = Field(description="decoding the upload (and reducing it to max_output_pixels)")
    inference_s: float = Field(description="the Predictor: resize, forward pass, upsampling to the output size")
    encode_s: float = Field(description="encoding the mask PNG and the overlay")
    total_s: float = Field(description="the whole request on the server, including waiting for a free slot")


class PredictResponse(BaseModel):
    width: int = Field(description="mask width: the image's, after EXIF orientation, reduced to max_output_pixels")
    height: int
    original_width: int = Field(description="width of the upload after EXIF orientation")
    original_height: int
    scale: float = Field(description="width / original_width: 1.0 unless the image was over max_output_pixels")
    classes: list[ClassShare]
    timing: Timing
    mask_png: str = Field(description="base64 PNG: binary 0/255 grey, multi-class palette indices")
    overlay: str | None = Field(description="base64 image of the class colours blended over the image (alpha)")
    overlay_type: str | None = Field(description="media type of the overlay (image/jpeg or image/png)")


class ModelResponse(BaseModel):
    weights: str = Field(description="file name of the served model")
    backend: str
    names: list[str]
    classes: list[ClassShare] = Field(description="the legend: every class with its colour (share 0)")
    imgsz: tuple[int, int] = Field(description="model input size (H, W); images of any size are accepted")
    binary: bool
    palette: list[tuple[int, int, int]]
    conf: float = Field(description="foreground threshold of a binary model")
    tta: bool
    max_upload_mb: float
    max_pixels: int
    max_output_pixels: int = Field(description="larger images are answered at a reduced size")
    max_concurrent: int = Field(description="requests processed at the same time")
    max_queue: int = Field(description="requests that may wait for a slot; more are answered 503")


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
        503: "busy: max_concurrent requests running and max_queue waiting; retry after Retry-After seconds",
    }.items()
}

PREDICT_BODY = {
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
