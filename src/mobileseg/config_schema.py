"""Training's config sections (model, data, train, runtime): one pydantic model each, with the validators that make
typed values of text; :mod:`mobileseg.config_commands` holds the sections of predict, export, convert and serve.

:mod:`mobileseg.config` assembles them into :class:`~mobileseg.config.Config` and loads YAML files and
``key=value`` overrides into it; this module holds what each key is (type, default, bounds, meaning) and how a
value typed on a command line (``imgsz=256x320``, ``split_ratios=0.8,0.1,0.1``, ``class_weights=auto``) becomes
that type, with an error that says what was expected.

Example:
    >>> DataConfig(imgsz="256x320").imgsz
    (256, 320)
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mobileseg.errors import ConfigError
from mobileseg.loss_spec import format_loss_spec, parse_loss_spec

STRIDE = 32  # MobileNetV2's output stride: input sides must be multiples of it.


OWN_TEXT_PARSER = {"imgsz", "crop", "window", "class_weights"}  # sequence fields parsing text themselves


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _sequence_text(cls, v: Any, info: ValidationInfo) -> Any:
        """``0.8,0.1,0.1`` (as typed on a command line or in YAML) for a tuple/list field, and a clear count error.

        One place for every tuple/list field, so a new one accepts the same forms: ``[0.8, 0.1, 0.1]``,
        ``0.8,0.1,0.1``, ``(0.8, 0.1, 0.1)`` or ``"0.8 0.1 0.1"``.
        """
        name = info.field_name
        shape = _sequence_shape(cls, name) if name else None
        if shape is None or name in OWN_TEXT_PARSER:
            return v
        if isinstance(v, str):
            v = [p for p in re.split(r"[,\s]+", v.strip().strip("[]()")) if p]
        if isinstance(v, int | float) and not isinstance(v, bool) and shape == -1:
            v = [v]  # class_weights=2 -> [2]
        if isinstance(v, list | tuple) and shape > 0 and len(v) != shape:
            raise ValueError(f"needs {shape} comma-separated values, e.g. {name}={_example(cls, name)}")
        return v


class ModelConfig(Section):
    """The network: MobileNetV2 encoder + pix2pix decoder."""

    width_mult: float = Field(1.0, gt=0, description="MobileNetV2 width multiplier")
    encoder_weights: str = Field(
        "imagenet",
        description="'imagenet' (torchvision weights, cached), 'none', or a path to a torchvision state dict; "
        "$MOBILESEG_ENCODER_WEIGHTS overrides 'imagenet'",
    )
    decoder: Literal["refine", "tutorial"] = Field(
        "refine",
        description="refine = bilinear upsampling + two 3x3 convs after each skip (default: no edge/grid defect, "
        "better on thin structures); tutorial = the TF tutorial's transposed convs",
    )
    decoder_channels: tuple[int, ...] | None = Field(
        None,
        description="filters of the decoder's 4 stages, deepest first (empty = the decoder's default: refine "
        "256,128,64,32; tutorial 512,256,128,64); refine takes a 5th for a full-resolution stage (e.g. ...,16)",
    )
    decoder_context: int = Field(
        0,
        ge=0,
        description="channels of an image-pooling branch (DeepLabV3's image-level feature) on the refine decoder's "
        "deepest input; 0 = none",
    )
    kernel_size: int = Field(3, ge=2, le=7, description="kernel of the tutorial decoder's transposed convolutions")

    @field_validator("decoder_context")
    @classmethod
    def _refine_only(cls, v: int, info: ValidationInfo) -> int:
        if v and info.data.get("decoder") == "tutorial":
            raise ValueError("needs decoder=refine; the tutorial decoder has no context branch")
        return v

    @field_validator("decoder_channels")
    @classmethod
    def _stage_count(cls, v: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if v is not None and (len(v) not in (4, 5) or min(v) < 1):
            raise ValueError(
                "needs 4 positive comma-separated values, e.g. decoder_channels=256,128,64,32 (a 5th adds "
                "the refine decoder's full-resolution stage)"
            )
        if v is not None and len(v) == 5 and info.data.get("decoder") == "tutorial":
            raise ValueError("5 values (a full-resolution stage) need decoder=refine; decoder=tutorial takes 4")
        return v

    decoder_dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the tutorial decoder's upsample blocks")
    freeze_encoder: bool = Field(False, description="train the decoder only (the TF tutorial's setting)")
    freeze_bn: bool = Field(False, description="keep the encoder's BatchNorm statistics fixed")


class DataConfig(Section):
    """What to train on and how to feed it."""

    dataset: str | None = Field(
        None, description="dataset YAML, image folder, or preset name; empty = the bundled pets sample"
    )
    preset: str | None = Field(None, description="preset ('oxford_pets', 'camvid') applied to a folder")
    imgsz: tuple[int, int] = Field((224, 224), description="model input size: one int or H,W (x32)")
    channels: int = Field(
        3,
        ge=1,
        le=64,
        description="input bands: 3 = RGB (grayscale images converted); 1 = grey, N = multi-band (TIFF): the "
        "files' own bands and bit depth (16-bit scaled by 65535), normalised by train-split statistics",
    )
    mask_resize: Literal["none", "nearest"] | None = Field(
        None,
        description="nearest = resize masks of another size than their image (scaled copies) to it; "
        "empty = the dataset YAML's mask_resize, else a size mismatch is an error",
    )
    cache: Literal["ram", "disk", "none", "auto"] = Field("auto", description="cache of decoded samples")
    split_ratios: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/val/test ratios of the automatic split"
    )
    split_seed: int = Field(0, description="seed of the automatic split")
    augment: bool = Field(True, description="augment training samples")
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    scale: tuple[float, float] = Field((0.75, 1.25), description="random zoom range")
    degrees: float = Field(10.0, ge=0, le=180, description="random rotation range, +- degrees")
    color_jitter: float = Field(0.2, ge=0, le=1, description="brightness/contrast/saturation jitter")
    workers: int | None = Field(None, ge=0, description="DataLoader workers; empty = chosen for the cores")
    train_scale: float | None = Field(None, gt=0, le=4, description="image scale before cropping (1 = native)")
    crop: tuple[int, int] | None = Field(None, description="random training crops H,W (x32); empty = whole images")
    crop_fg: float = Field(0.5, ge=0, le=1, description="share of crops centred on a labelled non-background pixel")

    _imgsz = field_validator("imgsz", "crop", mode="before")(lambda v: size_text(v))
    _imgsz_multiple = field_validator("imgsz", "crop")(lambda v: size_multiple(v))

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1) > 1e-6 or v[0] <= 0:
            raise ValueError(f"split ratios {v} must be >= 0, sum to 1, and give train a share")
        return v


class TrainConfig(Section):
    """Optimisation."""

    epochs: int = Field(30, ge=1, description="passes over the train split")
    batch: int = Field(8, ge=1, description="global batch size (split over DDP processes)")
    lr: float = Field(1e-3, gt=0, description="decoder learning rate")
    encoder_lr_mult: float = Field(0.1, ge=0, description="encoder lr = lr * this (pretrained encoder)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    warmup_epochs: float = Field(
        1.0, ge=0, description="linear lr warm-up before the cosine decay, in epochs (fractions allowed)"
    )
    grad_clip: float = Field(5.0, ge=0, description="max gradient norm; 0 = off")
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay of an average of the weights (e.g. 0.99 ~ the last 100 steps) that validation and the "
        "checkpoints use; 0 = off",
    )
    loss: str = Field(
        "auto",
        description="bce|ce, dice, focal, lovasz, tversky, or a sum with weights: bce+dice, bce:1+dice:0.5; "
        "auto = bce/ce, plus dice when a class is rare in the train split",
    )
    focal_gamma: float = Field(2.0, ge=0, description="focal loss exponent (0 = plain cross-entropy)")
    tversky_alpha: float = Field(0.3, ge=0, description="Tversky loss weight of false positives")
    tversky_beta: float = Field(0.7, ge=0, description="Tversky loss weight of false negatives")
    dice_weight: float = Field(0.0, ge=0, description="older form of loss=...+dice:W (adds a Dice term of weight W)")
    pos_weight: float | Literal["auto"] | None = Field(
        None, description="foreground weight in BCE/focal (binary); auto = from the train split's pixel counts"
    )
    class_weights: list[float] | Literal["auto"] | None = Field(
        None,
        description="weight per class in CE/focal (binary: background,foreground); auto = from train pixel counts",
    )
    freeze_encoder_epochs: int = Field(0, ge=0, description="train the decoder alone for the first N epochs")
    amp: bool = Field(
        True,
        description="mixed precision where it pays (CUDA, CPUs with bf16 units: AVX512-BF16/AMX), in training and "
        "in val/test/predict/serve of .pt models; false = fp32",
    )
    patience: int = Field(0, ge=0, description="early stopping after N epochs without improvement; 0 = off")
    best: Literal["val", "last"] = Field(
        "val", description="what weights/best.pt holds: val = the epoch of the highest val IoU; last = the final epoch"
    )
    resume: str | None = Field(None, description="the run to continue: its weights/last.pt, or the run folder")
    init: str | None = Field(
        None,
        description="start a new run from a trained model (a .pt checkpoint or a save_pretrained folder): "
        "fine-tuning, or a second stage with other settings; its architecture is kept, a head for other classes "
        "starts afresh",
    )
    sync_bn: bool = Field(False, description="SyncBatchNorm under DDP (CUDA only)")
    plot_every: int = Field(1, ge=1, description="refresh plots every N epochs")

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, v: Any) -> Any:
        try:
            terms = parse_loss_spec(v)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix(f"loss '{v}': ")) from None
        return "auto" if terms[0][0] == "auto" else format_loss_spec(terms)

    @field_validator("pos_weight", mode="before")
    @classmethod
    def _pos_weight(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        if isinstance(v, int | float) and not isinstance(v, bool) and not v > 0:
            raise ValueError("pos_weight must be > 0 or auto")
        return v

    @field_validator("class_weights", mode="before")
    @classmethod
    def _class_weights(cls, v: Any) -> Any:
        if isinstance(v, str):  # class_weights=auto, or class_weights=1,2,0.5 typed without brackets
            if v.strip().lower() == "auto":
                return "auto"
            try:
                v = [float(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError("class_weights must be numbers (e.g. 1,2,0.5) or auto") from None
        if isinstance(v, int | float) and not isinstance(v, bool):  # one number (YAML reads class_weights=2 so)
            v = [float(v)]
        if isinstance(v, list | tuple) and any(isinstance(x, int | float) and x < 0 for x in v):
            raise ValueError("class weights must be >= 0")
        return v

    @model_validator(mode="after")
    def _loss_terms(self) -> TrainConfig:
        if self.dice_weight and "dice" in self.loss.replace(":", "+").split("+"):
            raise ValueError(f"dice_weight={self.dice_weight:g} and loss={self.loss} both add a Dice term; keep one")
        if "tversky" in self.loss and not self.tversky_alpha + self.tversky_beta > 0:
            raise ValueError("tversky_alpha + tversky_beta must be > 0")
        if self.best == "last" and self.patience:
            raise ValueError("patience stops when val IoU stalls, but best=last keeps the final epoch; use one of them")
        return self


class RuntimeConfig(Section):
    """Where and how things run."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    seed: int = Field(0, description="seed of weights init, shuffling, augmentation (and export's noise images)")
    threads: int | None = Field(None, ge=1, description="torch threads; empty = the machine's cores")
    project: str = Field("runs", description="root of run folders")
    name: str | None = Field(None, description="run name; empty = exp, exp2, ...")
    exist_ok: bool = Field(False, description="reuse the run folder if it exists")
    weights: str | None = Field(None, description="checkpoint (.pt) or ONNX model to evaluate/predict/export")
    split: Literal["train", "val", "test"] = Field(
        "val", description="split evaluated by 'val'; 'test' always evaluates test"
    )
    verbose: bool = Field(True, description="print progress and results")
    tensorboard: bool = Field(False, description="log metrics, plots and config to TensorBoard (in the run folder)")
    mlflow: bool = Field(False, description="log to MLflow: $MLFLOW_TRACKING_URI, else mlflow.db beside project/")


@functools.cache
def _sequence_shape(section: type[BaseModel], name: str) -> int | None:
    """A field's fixed tuple length, -1 for a list or variable tuple, None when it is no sequence."""
    field = section.model_fields.get(name)
    if field is None:
        return None
    ann = field.annotation
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        ann = next((a for a in typing.get_args(ann) if a is not type(None)), ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is tuple:
        return -1 if (not args or Ellipsis in args) else len(args)
    return -1 if origin is list else None


def _example(section: type[BaseModel], name: str) -> str:
    default = section.model_fields[name].default
    count = _sequence_shape(section, name)
    return format_value(default) if default else ",".join(str(i) for i in range(1, max(count or 2, 2) + 1))


def size_text(v: Any) -> Any:
    """``256``, ``256x320``, ``256,320`` -> (H, W); empty -> None."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, int | float):
        return (int(v), int(v))
    if isinstance(v, str):
        parts = [p for p in v.replace("x", ",").split(",") if p.strip()]
        return tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
    return v


def size_multiple(v: tuple[int, int] | None) -> tuple[int, int] | None:
    if v is not None and any(s <= 0 for s in v):
        raise ValueError(f"image size {v[0]}x{v[1]} must be positive, a multiple of {STRIDE} on both sides")
    if v is not None and any(s % STRIDE for s in v):
        raise ValueError(
            f"image size {v[0]}x{v[1]} is not a multiple of {STRIDE} on both sides "
            f"(MobileNetV2 downsamples by {STRIDE}); try {_round32(v[0])}x{_round32(v[1])}"
        )
    return v


def _round32(v: int) -> int:
    return max(STRIDE, int(round(v / STRIDE)) * STRIDE)


def format_value(value: Any) -> str:
    """A value as typed on the command line: ``true``, ``0.8,0.1,0.1``, empty for None, text unquoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return ",".join(format_value(v) for v in value)
    return str(value)
