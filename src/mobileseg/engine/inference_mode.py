"""How a model predicts an image: resize or slide, window, overlap, blend, train_scale, TTA, in one value.

A model trained on crops must be evaluated and used the way it was trained (windows over the image scaled by
``train_scale``), so training records its mode (:meth:`InferenceSettings.record`, stored in the checkpoint as
``inference`` and in exported files' metadata, see :class:`~mobileseg.models.model_file.ModelInfo`), and
:func:`resolve_settings` starts from that record; keys given now (``infer=``, ``window=``, ``overlap=``...) win.
:class:`SlideModel` wraps a network so the evaluator's one loop scores slide mode at each image's own size.

Example:
    >>> s = InferenceSettings(infer="slide", window=(64, 64), tta="flip+ms")
    >>> s.flip, s.scales
    (True, (0.75, 1.0, 1.25))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mobileseg.config import Config
from mobileseg.errors import ConfigError
from mobileseg.models.model_file import ModelInfo

from .inference import STREAM_PIXELS, flip_average, resize_tta, slide_image

RECORDED = ("infer", "window", "overlap", "blend", "train_scale", "tta_scales")  # what a model file remembers
DEFAULT_TTA_SCALES = (0.75, 1.0, 1.25)


@dataclass(frozen=True)
class InferenceSettings:
    """Everything that decides how an image becomes a prediction, besides the weights.

    Args:
        infer: ``resize`` (the whole image to the model's input size) or ``slide`` (windows over the image at
            ``train_scale``, outputs at the image's size).
        window: slide window (H, W); None = the model's input size.
        overlap: fraction of a window shared with its neighbour.
        blend: window weights, ``gaussian``, ``linear`` or ``mean``.
        train_scale: the scale training cropped at (None = 1, native resolution).
        tta: ``none``, ``flip``, ``ms`` or ``flip+ms``.
        tta_scales: the scales of ``ms``.
        batch: windows per forward pass.
        stream_pixels: slide images larger than this (after scaling) stream row bands to a uint8 class map.
    """

    infer: str = "resize"
    window: tuple[int, int] | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    train_scale: float | None = None
    tta: str = "none"
    tta_scales: tuple[float, ...] = field(default=DEFAULT_TTA_SCALES)
    batch: int = 4
    stream_pixels: int = STREAM_PIXELS

    @property
    def flip(self) -> bool:
        return "flip" in self.tta

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(self.tta_scales) if "ms" in self.tta else (1.0,)

    @property
    def slide(self) -> bool:
        return self.infer == "slide"

    def with_flip(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``fn`` (windows -> probabilities) with the flip TTA these settings ask for: one place for predict, serve,
        val and test, so an evaluation scores exactly what prediction returns."""
        return flip_average(fn) if self.flip else fn

    def resize_probs(self, fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """Resize-mode probabilities of ``batch`` (at the model's input size) with flip and multi-scale TTA."""
        return resize_tta(self.with_flip(fn), batch, self.scales)

    def record(self) -> dict[str, Any]:
        """The part a model file stores (checkpoint ``inference``, export metadata, args.yaml)."""
        return {
            "infer": self.infer,
            "window": list(self.window) if self.window else None,
            "overlap": self.overlap,
            "blend": self.blend,
            "train_scale": self.train_scale,
            "tta_scales": list(self.tta_scales),  # used by tta=ms/flip+ms only; asked for at test/predict time
        }

    def describe(self) -> str:
        """One line for logs and the model card."""
        if not self.slide:
            text = "resize to the input size"
        else:
            w = f"{self.window[0]}x{self.window[1]}" if self.window else "input-size"
            scale = "native resolution" if self.train_scale in (None, 1.0) else f"scale {self.train_scale:g}"
            text = f"slide {w} windows, overlap {self.overlap:g}, {self.blend} blend, at {scale}"
        scales = f" at scales {','.join(f'{v:g}' for v in self.tta_scales)}" if "ms" in self.tta else ""
        return text + ("" if self.tta == "none" else f", TTA {self.tta}{scales}")


def from_record(record: Mapping[str, Any] | None) -> InferenceSettings:
    """Settings from a stored record (missing or unknown keys keep the defaults: files from before slide mode)."""
    if not record:
        return InferenceSettings()
    kept = {k: record[k] for k in RECORDED if record.get(k) is not None}
    if kept.get("window") is not None:
        kept["window"] = (int(kept["window"][0]), int(kept["window"][1]))
    if kept.get("tta_scales") is not None:
        kept["tta_scales"] = tuple(float(v) for v in kept["tta_scales"])
    return InferenceSettings(**kept)


def training_settings(cfg: Config) -> InferenceSettings:
    """The mode a training run's model is meant for: slide at ``train_scale`` with windows of the crop when it
    trains on crops (``infer=`` given for training wins), else resize."""
    d, p = cfg.data, cfg.predict
    infer = p.infer or ("slide" if d.crop else "resize")
    window = p.window or d.crop or d.imgsz
    return InferenceSettings(
        infer=infer,
        window=tuple(window),  # type: ignore[arg-type]
        overlap=0.25 if p.overlap is None else p.overlap,
        blend=p.blend or "gaussian",
        train_scale=d.train_scale,
        tta_scales=tuple(p.tta_scales or DEFAULT_TTA_SCALES),  # the scales this dataset's tta=ms is meant to use
    )


def resolve_settings(cfg: Config, info: ModelInfo) -> InferenceSettings:
    """The model's recorded mode with the keys given in ``cfg`` on top (``infer``, ``window``, ``overlap``,
    ``blend``, ``train_scale``, ``tta``, ``tta_scales``; ``train.batch`` = windows per forward pass).

    Raises:
        ConfigError: a window other than the input size of a fixed-size export, or multi-scale TTA in resize
            mode with one (slide mode runs any scale through the fixed window).
    """
    s = from_record(info.inference)
    p = cfg.predict
    updates: dict[str, Any] = {"tta": p.tta, "batch": cfg.train.batch}
    if p.tta_scales is not None:  # else the model's own (recorded at training; files from before: the default)
        updates["tta_scales"] = tuple(p.tta_scales)
    for key, value in (("infer", p.infer), ("window", p.window), ("overlap", p.overlap), ("blend", p.blend)):
        if value is not None:
            updates[key] = tuple(value) if key == "window" else value
    if cfg.data.train_scale is not None:
        updates["train_scale"] = cfg.data.train_scale
    s = replace(s, **updates)
    if s.window is None:
        s = replace(s, window=tuple(info.imgsz))
    if not info.dynamic_hw:
        if s.slide and tuple(s.window) != tuple(info.imgsz):  # type: ignore[arg-type]
            raise ConfigError(f"this export takes {info.imgsz[0]}x{info.imgsz[1]} inputs only: window must be that")
        if not s.slide and "ms" in s.tta:
            raise ConfigError("tta=ms resizes the input, which a fixed-size export cannot take; use infer=slide")
    return s


def activation(binary: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits -> probabilities: sigmoid for a one-channel (binary) model, softmax over classes otherwise."""
    return torch.sigmoid if binary else (lambda x: x.softmax(1))


def to_classes_fn(binary: bool, conf: float = 0.5) -> Callable[[torch.Tensor], torch.Tensor]:
    """Probabilities (C, h, w) -> class map (h, w): threshold ``conf`` (binary) or argmax."""
    return (lambda p: p[0] > conf) if binary else (lambda p: p.argmax(0))


class SlideModel(nn.Module):
    """A network as the evaluator sees it in slide mode: native-size images in, *pseudo-logits* out.

    Each image (N may be > 1 only for equal sizes) is slid over at ``train_scale`` (with TTA), and the blended
    probabilities p come back at the image's size as ``log p`` (multi-class) or ``logit p`` (binary). Softmax
    or sigmoid of those gives p again, so the evaluator's argmax/threshold, its metrics and the loss (scored on
    the blended probabilities) need no special case.

    Args:
        net: the network (a module, which ``eval()``/``train()`` reach through this wrapper, or any backend).
        settings: the slide settings (``window`` must be set).
        binary: one output channel with a sigmoid.
        device: where the windows run (outputs are blended on the CPU).
    """

    def __init__(
        self, net: Callable[[torch.Tensor], torch.Tensor], settings: InferenceSettings, binary: bool, device: Any = None
    ) -> None:
        super().__init__()
        self.net, self.settings, self.binary = net, settings, binary
        self.device = torch.device(device) if device is not None else None
        self.act = activation(binary)

    def window_fn(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of a batch of windows (on the CPU)."""
        if self.device is not None:
            x = x.to(self.device)
        with torch.inference_mode():
            return self.act(self.net(x).float()).cpu()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.settings
        assert s.window is not None
        fn = s.with_flip(self.window_fn)
        outs = []
        for image in images.cpu():
            u8 = image.mul(255).round().clamp(0, 255).to(torch.uint8)
            probs, _ = slide_image(
                fn, u8, s.window, overlap=s.overlap, blend=s.blend, batch=s.batch, train_scale=s.train_scale,
                scales=s.scales,
            )  # fmt: skip
            assert probs is not None
            outs.append(probs)
        return pseudo_logits(torch.stack(outs), self.binary).to(images.device)


def pseudo_logits(p: torch.Tensor, binary: bool) -> torch.Tensor:
    """``logit p`` (binary) or ``log p``: what sigmoid/softmax turns back into the probabilities ``p``."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p)) if binary else torch.log(p)


class ResizeTTAModel(nn.Module):
    """A network as the evaluator sees it in resize mode with test-time augmentation: the flip and/or multi-scale
    average of its probabilities, returned as pseudo-logits (see :class:`SlideModel`), so ``tta=`` changes the
    scores of ``val``/``test`` exactly as it changes ``predict``.

    Args:
        net: the network (any backend taking the resized batch).
        settings: the settings (``flip``, ``scales``).
        binary: one output channel with a sigmoid.
    """

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], settings: InferenceSettings, binary: bool) -> None:
        super().__init__()
        self.net, self.settings, self.binary = net, settings, binary
        self.act = activation(binary)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        def probs(x: torch.Tensor) -> torch.Tensor:
            return self.act(self.net(x).float())

        return pseudo_logits(self.settings.resize_probs(probs, images), self.binary)


__all__ = [
    "DEFAULT_TTA_SCALES",
    "RECORDED",
    "InferenceSettings",
    "ResizeTTAModel",
    "SlideModel",
    "activation",
    "from_record",
    "pseudo_logits",
    "resolve_settings",
    "to_classes_fn",
    "training_settings",
]
