"""Typed configuration: one schema, YAML files, and ``key=value`` overrides.

The schema has four sections (``model``, ``data``, ``train``, ``runtime``) plus the per-command sections
``predict``, ``export`` and ``serve``. Every field name is unique across sections, so the command line can use the short
form (``epochs=5``) as well as the dotted one (``train.epochs=5``). The resolved config is written into every
run folder (``args.yaml``) so a run can be reproduced and a checkpoint rebuilt from it alone.

Example:
    >>> cfg = load_config(overrides=["epochs=2", "imgsz=256"])
    >>> cfg.train.epochs, cfg.data.imgsz
    (2, (256, 256))
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STRIDE = 32  # MobileNetV2's output stride: input sides must be multiples of it.


class ConfigError(ValueError):
    """A configuration problem, worded for the user (no traceback needed)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """The network: MobileNetV2 encoder + pix2pix decoder."""

    width_mult: float = Field(1.0, gt=0, description="MobileNetV2 width multiplier")
    encoder_weights: str = Field(
        "imagenet",
        description="'imagenet' (torchvision weights, cached), 'none', or a path to a torchvision state dict; "
        "$MOBILESEG_ENCODER_WEIGHTS overrides 'imagenet'",
    )
    kernel_size: int = Field(3, ge=2, le=7, description="kernel of the decoder's transposed convolutions")
    decoder_dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the pix2pix upsample blocks")
    freeze_encoder: bool = Field(False, description="train the decoder only (the TF tutorial's setting)")
    freeze_bn: bool = Field(False, description="keep the encoder's BatchNorm statistics fixed")


class DataConfig(_Section):
    """What to train on and how to feed it."""

    dataset: str | None = Field(
        None, description="dataset YAML, image folder, or preset name; empty = the bundled pets sample"
    )
    preset: str | None = Field(None, description="preset ('oxford_pets', 'camvid') applied to a folder")
    imgsz: tuple[int, int] = Field((224, 224), description="model input size: one int or H,W (x32)")
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

    @field_validator("imgsz", mode="before")
    @classmethod
    def _imgsz(cls, v: Any) -> Any:
        if isinstance(v, int | float):
            return (int(v), int(v))
        if isinstance(v, str):
            parts = [p for p in v.replace("x", ",").split(",") if p.strip()]
            return tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
        return v

    @field_validator("imgsz")
    @classmethod
    def _imgsz_multiple(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(s <= 0 or s % STRIDE for s in v):
            raise ValueError(
                f"image size {v[0]}x{v[1]} is not a multiple of {STRIDE} on both sides "
                f"(MobileNetV2 downsamples by {STRIDE}); try {_round32(v[0])}x{_round32(v[1])}"
            )
        return v

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1) > 1e-6 or v[0] <= 0:
            raise ValueError(f"split ratios {v} must be >= 0, sum to 1, and give train a share")
        return v


class TrainConfig(_Section):
    """Optimisation."""

    epochs: int = Field(30, ge=1)
    batch: int = Field(8, ge=1, description="global batch size (split over DDP processes)")
    lr: float = Field(1e-3, gt=0, description="decoder learning rate")
    encoder_lr_mult: float = Field(0.1, ge=0, description="encoder lr = lr * this (pretrained encoder)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float = Field(5.0, ge=0, description="max gradient norm; 0 = off")
    dice_weight: float = Field(0.0, ge=0, description="weight of an added Dice loss term")
    pos_weight: float | None = Field(None, gt=0, description="BCE positive-class weight (binary)")
    class_weights: list[float] | None = Field(None, description="cross-entropy class weights")
    freeze_encoder_epochs: int = Field(0, ge=0, description="train the decoder alone for the first N epochs")
    amp: bool = Field(True, description="mixed precision where it pays: CUDA, CPUs with bf16 units (AVX512-BF16/AMX)")
    patience: int = Field(0, ge=0, description="early stopping after N epochs without improvement; 0 = off")
    resume: str | None = Field(None, description="path to weights/last.pt of the run to continue")
    sync_bn: bool = Field(False, description="SyncBatchNorm under DDP (CUDA only)")
    plot_every: int = Field(1, ge=1, description="refresh plots every N epochs")


class RuntimeConfig(_Section):
    """Where and how things run."""

    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch threads; empty = the machine's cores")
    project: str = Field("runs", description="root of run folders")
    name: str | None = Field(None, description="run name; empty = exp, exp2, ...")
    exist_ok: bool = Field(False, description="reuse the run folder if it exists")
    weights: str | None = Field(None, description="checkpoint (.pt) or ONNX model to evaluate/predict/export")
    split: str = Field("val", description="split evaluated by 'val' / 'test'")
    verbose: bool = True
    tensorboard: bool = Field(
        False, description="log metrics, plots and config to TensorBoard (event files in the run folder)"
    )
    mlflow: bool = Field(
        False, description="log to MLflow: $MLFLOW_TRACKING_URI, else mlflow.db beside the project folder"
    )


class PredictConfig(_Section):
    source: str | None = Field(None, description="image file, folder, glob or list file")
    out: str | None = Field(None, description="output folder; empty = runs/predict/expN")
    tta: bool = Field(False, description="horizontal-flip test-time augmentation")
    save_probs: bool = Field(False, description="also save probability maps (.npy)")
    conf: float = Field(0.5, gt=0, lt=1, description="foreground threshold (binary)")


class ExportConfig(_Section):
    format: Literal["onnx", "torchscript"] = "onnx"
    int8: bool = Field(False, description="static int8 quantization (ONNX Runtime)")
    opset: int = 17
    calib_images: int = Field(32, ge=1)


class ServeConfig(_Section):
    """``mobileseg serve``: where the HTTP server listens and what it accepts.

    Loopback by default so a model is never exposed to the network by accident; the token and the limits are
    the guards for when it is. ``$MOBILESEG_TOKEN`` is read by the server itself, not copied in here, so the
    secret never lands in a saved config (``args.yaml``) of another command run with the variable set.
    """

    host: str = Field("127.0.0.1", description="address to bind; anything but loopback warns without a token")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    token: str | None = Field(None, description="bearer token the API requires; empty = $MOBILESEG_TOKEN, else no auth")
    max_upload_mb: float = Field(20.0, gt=0, description="largest accepted request body, in MB (413 above)")
    max_pixels: int = Field(40_000_000, ge=1, description="largest accepted image, width x height (413 above)")

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


class Config(BaseModel):
    """The whole resolved configuration."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    predict: PredictConfig = PredictConfig()
    export: ExportConfig = ExportConfig()
    serve: ServeConfig = ServeConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = ("model", "data", "train", "runtime", "predict", "export", "serve")
ALIASES = {"data": "data.dataset", "cfg": "cfg"}


def _round32(v: int) -> int:
    return max(STRIDE, int(round(v / STRIDE)) * STRIDE)


def _key_index() -> dict[str, str]:
    """Short key -> dotted key, for every field (names are unique across sections)."""
    index: dict[str, str] = {}
    for section in SECTIONS:
        for name in Config.model_fields[section].annotation.model_fields:  # type: ignore[union-attr]
            assert name not in index, f"duplicate config key {name}"
            index[name] = f"{section}.{name}"
    index.update({k: v for k, v in ALIASES.items() if k != "cfg"})
    return index


KEYS = _key_index()


def resolve_key(key: str) -> str:
    """Map a short or dotted key to its dotted form, or raise with the closest suggestion."""
    if "." in key:
        section, _, name = key.partition(".")
        if section in SECTIONS and name in Config.model_fields[section].annotation.model_fields:  # type: ignore
            return key
    elif key in KEYS:
        return KEYS[key]
    choices = list(KEYS) + [v for v in KEYS.values()]
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else " Run 'mobileseg --help' for the keys."
    raise ConfigError(f"unknown config key '{key}'.{hint}")


def parse_value(text: str) -> Any:
    """Parse a command-line value as YAML (so 'true', '3', '1e-3', '[1,2]', 'null' mean what they say)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _nest(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in flat.items():
        section, _, name = resolve_key(dotted).partition(".")
        nested.setdefault(section, {})[name] = value
    return nested


def _flatten_yaml(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept both the sectioned form (as saved in args.yaml) and flat keys in a YAML file."""
    flat: dict[str, Any] = {}
    for key, value in (doc or {}).items():
        if key in SECTIONS and isinstance(value, dict) and key != "data":
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key == "data" and isinstance(value, dict):
            flat.update({f"data.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    for key in flat:
        try:
            resolve_key(key)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return flat


def load_config(
    cfg: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file/dict, then overrides.

    Args:
        cfg: a YAML file path or a dict (sectioned or flat keys); later values win.
        overrides: ``["key=value", ...]`` strings from the command line, or a ``{key: value}`` dict.
    """
    flat: dict[str, Any] = {}
    if isinstance(cfg, str | Path):
        path = Path(cfg)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        flat.update(_flatten_yaml(doc, str(path)))
    elif isinstance(cfg, dict):
        flat.update(_flatten_yaml(cfg, "config"))
    if isinstance(overrides, dict):
        flat.update(overrides)
    else:
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"expected key=value, got '{item}'")
            flat[key.strip()] = parse_value(value)
    nested = _nest(flat)
    try:
        return Config(**nested)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None


def resolve_config(
    cfg: Config | str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """What every API entry point accepts: a :class:`Config`, a YAML path or dict, plus keyword overrides."""
    if not isinstance(cfg, Config):
        return load_config(cfg, overrides)
    return load_config(cfg.to_dict(), overrides) if overrides else cfg


def _explain(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not isinstance(p, int))
        got = item.get("input")
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg} (got {got!r})")
    return "invalid config: " + "; ".join(lines)


def default_threads() -> int:
    """Threads for torch: the cores this process may use (oversubscribing 2 cores is several times slower)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def key_help() -> str:
    """One line per key with its default and description, for ``--help``."""
    lines = []
    defaults = Config()
    for section in SECTIONS:
        lines.append(f"  [{section}]")
        sec_model = getattr(defaults, section)
        for name, field in type(sec_model).model_fields.items():
            value = getattr(sec_model, name)
            desc = f"  {field.description}" if field.description else ""
            shown = "data" if (section, name) == ("data", "dataset") else name
            lines.append(f"    {shown}={value!r:<12}{desc}")
    return "\n".join(lines)
