"""The config sections of the commands that use a trained model: predict, export, convert and serve.

Split from :mod:`mobileseg.config_schema` (the sections of training: model, data, train, runtime) to keep each
module small; both build on its :class:`~mobileseg.config_schema.Section`, so every key parses the same way.

Example:
    >>> PredictConfig(tta="true").tta  # tta was a bool before multi-scale existed
    'flip'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from mobileseg.config_schema import Section, size_multiple, size_text


class PredictConfig(Section):
    """``mobileseg predict`` (``conf``/``tta`` also apply to ``serve``, ``conf`` to the metrics)."""

    source: str | None = Field(None, description="image file, folder, glob or list file")
    out: str | None = Field(None, description="output folder; empty = runs/predict/expN")
    tta: Literal["none", "flip", "ms", "flip+ms"] = Field("none", description="flip, ms (tta_scales), flip+ms")
    tta_scales: tuple[float, ...] | None = Field(
        None,
        description="scales of tta=ms, each > 0; empty = the model's (0.75,1,1.25 unless set when it was trained)",
    )
    infer: Literal["resize", "slide"] | None = Field(
        None, description="resize to imgsz, or slide windows at train_scale; empty = the model's trained mode"
    )
    window: tuple[int, int] | None = Field(None, description="slide window H,W (x32); empty = the model's input size")
    overlap: float | None = Field(None, ge=0, lt=1, description="slide window overlap; empty = the model's, else 0.25")
    blend: Literal["gaussian", "linear", "mean"] | None = Field(None, description="window weights; empty = gaussian")
    save_probs: bool = Field(False, description="also save probability maps (.npy)")
    compile: bool = Field(
        False,
        description="torch.compile a .pt model for inference (inductor, weights frozen): a minute or two to compile "
        "per input shape, then faster; pays on large folders, long test sets and servers",
    )
    conf: float = Field(0.5, gt=0, lt=1, description="foreground threshold (binary)")

    _window = field_validator("window", mode="before")(lambda v: size_text(v))
    _window_multiple = field_validator("window")(lambda v: size_multiple(v))

    @field_validator("tta_scales")
    @classmethod
    def _scales(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        # A scale of 0 or below has no image size; training records the scales, so refuse them before any work.
        if v is not None and (not v or any(s <= 0 for s in v)):
            raise ValueError(f"tta scales {v} must be one or more numbers > 0, e.g. tta_scales=0.75,1,1.25")
        return v

    @field_validator("tta", mode="before")
    @classmethod
    def _tta(cls, v: Any) -> Any:
        # tta was a bool (horizontal flip) before multi-scale existed: true/false keep their meaning.
        text = str(v).strip().lower().replace("ms+flip", "flip+ms")
        return {"none": "none", "false": "none", "": "none", "true": "flip"}.get(text, text)


class ExportConfig(Section):
    """``mobileseg export`` (``opset``/``calib_images`` also apply to ``benchmark``'s temporary exports)."""

    format: Literal["onnx", "torchscript", "executorch", "tflite", "safetensors"] = Field(
        "onnx",
        description="onnx, torchscript, executorch (.pte, phones), tflite (LiteRT, phones), or safetensors "
        "(a Hub-style folder: config.json + weights + card)",
    )
    outputs: Literal["logits", "probs", "mask"] = Field(
        "logits", description="what the exported graph returns: logits, probs, or mask (uint8 class map in the graph)"
    )
    int8: bool = Field(False, description="static int8 quantization (ONNX Runtime, ExecuTorch, LiteRT)")
    opset: int = Field(17, description="ONNX opset version")
    calib_images: int = Field(32, ge=1, description="images (train split, else source) calibrating int8")
    int8_reduce_range: bool | Literal["auto"] = Field(
        "auto",
        description="7-bit ONNX int8 weights (no overflow on x86 CPUs without VNNI); auto = 7-bit unless this CPU "
        "has VNNI/AMX or is ARM; false = 8-bit, for VNNI/ARM targets",
    )
    int8_float_layers: list[str] = Field(
        ["auto"],
        description="modules the ONNX / ExecuTorch int8 model keeps in float, e.g. encoder.features.1; auto = the "
        "stem and first block (encoder.features.0,encoder.features.1: int8 there cost CamVid 0.006-0.011 mIoU); "
        "empty = none",
    )
    _no_float_layers = field_validator("int8_float_layers", mode="before")(lambda v: [] if v is None else v)


class ConvertConfig(Section):
    """``mobileseg convert``: polygon / instance labels (COCO JSON, LabelMe JSON) to an images + masks dataset."""

    labels: str | None = Field(None, description="a COCO JSON file, or a folder (or file) of LabelMe JSON")
    label_format: Literal["auto", "coco", "labelme"] = Field(
        "auto", description="auto = coco for a .json file with 'annotations', labelme otherwise"
    )
    images: str | None = Field(None, description="the COCO images folder (LabelMe JSON name their own images)")
    class_names: list[str] | None = Field(
        None, description="class order (background first); empty = background + the labels in order of appearance"
    )
    unknown_labels: Literal["error", "background", "ignore"] = Field(
        "error", description="what a label missing from class_names becomes"
    )


class ServeConfig(Section):
    """``mobileseg serve``: where the HTTP server listens and what it accepts.

    Loopback by default so a model is never exposed to the network by accident; the token and the limits are
    the guards for when it is. ``$MOBILESEG_TOKEN`` is read by the server itself, not copied in here, so the
    secret never lands in a saved config (``args.yaml``) of another command run with the variable set.
    """

    host: str = Field("127.0.0.1", description="address to bind; anything but loopback warns without a token")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    token: str | None = Field(None, description="bearer token the API requires; empty = $MOBILESEG_TOKEN, else no auth")
    max_upload_mb: float = Field(20.0, gt=0, description="largest accepted request body, in MB (413 above)")
    max_pixels: int = Field(25_000_000, ge=1, description="largest accepted image, width x height (413 above)")
    max_output_pixels: int = Field(
        4_000_000, ge=1, description="larger images are reduced to this many pixels on decoding; masks at that size"
    )
    max_concurrent: int = Field(2, ge=1, description="requests decoded/predicted/encoded at the same time")
    max_queue: int = Field(8, ge=0, description="requests that may wait for a slot; more are answered 503")

    @field_validator("token", mode="before")
    @classmethod
    def _token(cls, v: Any) -> Any:
        # An empty value (``token=`` on the command line) means no token, never the empty string as a token.
        # Command-line values are read as YAML, so ``token=0123`` arrives as the number 83: refuse it rather than
        # silently require a different secret than the one the user typed.
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        if not isinstance(v, str):
            raise ValueError("the token must be text; quote it (token='\"0123\"') or set $MOBILESEG_TOKEN")
        return v.strip()
