"""Prediction on new images at their original size, with any backend (PyTorch, ONNX Runtime, TorchScript...).

One :class:`Predictor` serves the command line, the Python API and the HTTP server. It owns a *backend* (a
callable from images to logits; :func:`mobileseg.deploy.runtimes.load_predictor` opens one from any model file)
and the model's metadata (:class:`~mobileseg.models.model_file.ModelInfo`: class names, input size, palette), so
the same pre- and post-processing runs whatever the file is, and a ``.pt`` and its exported ``.onnx`` give the
same masks.

Pre-processing: RGB (grayscale and RGBA are converted, EXIF orientation honoured), resized bilinearly to the
model's input size, float in [0, 1], NCHW; the model normalises internally. Post-processing: sigmoid (binary) or
softmax probabilities are upsampled *bilinearly* to the image's original size and only then thresholded
(``conf``) or arg-maxed, which gives smoother, more accurate edges than nearest-resizing a small mask.

In slide mode (``settings.infer == 'slide'``, the default for models trained on crops) each image is instead
scaled by ``train_scale`` and predicted in overlapping windows (:mod:`mobileseg.engine.inference`); the result
comes back to the original size by nearest neighbour, and images over ``settings.stream_pixels`` pixels stream
row bands straight to the uint8 mask (their ``probs`` are then empty). Flip and multi-scale TTA
(``tta='flip'|'ms'|'flip+ms'``) work in both modes.

Example:
    >>> from mobileseg.models import Segmenter
    >>> from mobileseg.models.model_file import load_model
    >>> model, info, _ = load_model(Segmenter(num_classes=1).to_checkpoint(imgsz=(64, 64)))
    >>> p = Predictor(model, info)
    >>> p.predict_image(np.zeros((48, 80, 3), np.uint8)).mask.shape
    (48, 80)
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mobileseg import viz
from mobileseg.data.bands import display_rgb, image_hw, read_image_input, resize_bands, unit_tensor
from mobileseg.models.model_file import ModelInfo

from .inference import chw_pixels, slide_image
from .inference_mode import InferenceSettings, activation, from_record, to_classes_fn

ImageInput = Image.Image | np.ndarray | str | Path
Backend = Callable[[torch.Tensor], torch.Tensor]  # float32 NCHW images in [0, 1] -> float32 logits on the CPU


def warn(message: str) -> None:
    """A warning line on stderr (through tqdm, so an active progress bar is not torn apart)."""
    from tqdm import tqdm

    tqdm.write(f"WARNING: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- predictions
@dataclass
class PredictionResult:
    """One image's prediction at its original size.

    Attributes:
        mask: class indices, uint8 (H, W) (0/1 for a binary model).
        probs: float32 probabilities, (H, W) foreground for a binary model, else (C, H, W).
        names: class names (index = mask value).
        seconds: time spent on this image (its share of the batch's inference plus its own pre/post-processing).
        shares: pixel share of every class name.
        path: the source file, when the image came from one.
    """

    mask: np.ndarray
    probs: np.ndarray
    names: list[str]
    seconds: float
    shares: dict[str, float] = field(default_factory=dict)
    path: str | None = None

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


class Predictor:
    """Segments images with any mobileseg model; thread-safe and cheap to call repeatedly.

    The model is loaded once; each call only pre-processes, runs the backend under a lock (one inference at a
    time: a torch module and a CPU thread pool are not made for concurrent calls, and concurrent calls would
    only fight over the same cores) and post-processes outside it.

    Args:
        backend: the network, a callable from float32 NCHW images in [0, 1] to logits (a ``Segmenter`` or any
            backend of :mod:`mobileseg.deploy.runtimes`); a torch module runs under ``inference_mode``.
        info: the model's metadata (names, input size, palette, binary).
        conf: foreground threshold of a binary model.
        tta: ``'flip'`` (or True) averages the image and its horizontal flip, ``'ms'`` the scales of
            ``settings.tta_scales``, ``'flip+ms'`` both; ignored when ``settings`` is given (it holds its own).
        weights: the file the model came from, for messages and the server's model page.
        settings: resize or slide and their details (see :func:`mobileseg.engine.inference_mode.resolve_settings`);
            None = the mode recorded in the model (``info.inference``), else resize.

    Example:
        >>> p = load_predictor("best.onnx")  # from mobileseg.deploy.runtimes  # doctest: +SKIP
        >>> result = p.predict_image("dog.jpg")  # doctest: +SKIP
        >>> result.mask.shape, result.names  # doctest: +SKIP
        ((500, 375), ['background', 'pet'])
    """

    def __init__(
        self,
        backend: Backend,
        info: ModelInfo,
        conf: float = 0.5,
        tta: bool | str = False,
        weights: str | Path | None = None,
        settings: InferenceSettings | None = None,
    ) -> None:
        if not 0 < conf < 1:
            raise ValueError(f"conf must be in (0, 1), got {conf}")
        if isinstance(backend, torch.nn.Module):
            backend = backend.eval()
        self.backend = backend
        self.info = info
        self.weights = Path(weights) if weights is not None else Path("model")
        self.conf = float(conf)
        if settings is None:
            mode = "flip" if tta is True else "none" if not tta else str(tta)
            settings = dataclasses.replace(from_record(info.inference), tta=mode)
        if settings.window is None:
            settings = dataclasses.replace(settings, window=tuple(info.imgsz))
        self.settings = settings
        self.tta = settings.tta != "none"
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        """What runs the network: ``torch``, ``onnxruntime``..."""
        return str(getattr(self.backend, "kind", "torch"))

    @property
    def precision(self) -> str | None:
        """The forward pass's precision (``bf16``, ``fp16``, ``fp32``) when the backend says it (a checkpoint's
        :class:`~mobileseg.deploy.runtimes.TorchBackend`); a bare module runs fp32; None for exported files, which
        run as they were exported."""
        if isinstance(self.backend, torch.nn.Module):
            return "fp32"
        value = getattr(self.backend, "precision", None)
        return str(value) if value is not None else None

    def describe(self) -> str:
        """Backend, precision and inference mode in one line, for logs: which precision made a figure."""
        kind = f"{self.kind} {self.precision}" if self.precision else self.kind
        return f"{kind}, {self.settings.describe()}"

    @property
    def names(self) -> list[str]:
        return self.info.names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.info.imgsz

    @property
    def binary(self) -> bool:
        return self.info.binary

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.info.palette

    def read(self, image: ImageInput) -> Image.Image | np.ndarray:
        """An input as the model's training read it: an RGB PIL image (3 channels), else an HxWxC uint8/uint16
        array of the model's bands (:func:`mobileseg.data.bands.read_image_input`)."""
        return read_image_input(image, self.info.in_channels)

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.weights)!r}, backend={self.kind}, precision={self.precision}, imgsz={self.imgsz}, "
            f"names={self.names}, {self.settings.describe()})"
        )

    # -- steps
    def preprocess(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """RGB PIL image (or HxWxC bands from :meth:`read`) -> float (C, H, W) in [0, 1] at the model's input size."""
        h, w = self.imgsz
        if isinstance(image, np.ndarray):  # non-RGB bands (in_channels != 3), scaled by their dtype's range
            return unit_tensor(resize_bands(image, (h, w)))
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Model-size probabilities (N, C, h, w) of a preprocessed batch; C = 1 for a binary model.

        With flip TTA, the flipped copies run in the same batch and their output is flipped back before
        averaging; with multi-scale TTA the batch runs once per scale (sides rounded to 32), outputs resized back.
        """
        return self.settings.resize_probs(self.window_probs, batch)

    def window_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities of one forward pass (the backend under the lock: one inference at a time)."""
        with self._lock, torch.inference_mode():
            logits = self.backend(x).float().cpu()
        return activation(self.binary)(logits)

    def predict_slide(self, image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask, probs) of one image from :meth:`read` (RGB, or the model's bands) in slide mode, at its size
        (probs empty when streamed)."""
        s = self.settings
        assert s.window is not None
        probs, classes = slide_image(
            s.with_flip(self.window_probs), chw_pixels(image), s.window, overlap=s.overlap, blend=s.blend,
            batch=s.batch, train_scale=s.train_scale, scales=s.scales, to_classes=to_classes_fn(self.binary, self.conf),
            stream_pixels=s.stream_pixels,
        )  # fmt: skip
        if probs is None:
            assert classes is not None
            return classes, np.zeros((0, 0), np.float32)
        return self.postprocess(probs, image_hw(image))

    def postprocess(self, probs: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Upsample one image's probabilities (C, h, w) bilinearly to ``size`` (H, W), then threshold/argmax."""
        if tuple(probs.shape[-2:]) != tuple(size):
            probs = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
        if self.binary:
            p = probs[0]
            return (p > self.conf).to(torch.uint8).numpy(), p.numpy()
        return probs.argmax(0).to(torch.uint8).numpy(), probs.numpy()

    def shares(self, mask: np.ndarray) -> dict[str, float]:
        """Pixel share of every class in a mask."""
        counts = np.bincount(mask.ravel(), minlength=self.info.num_classes)[: self.info.num_classes]
        total = max(1, mask.size)
        return {name: float(c) / total for name, c in zip(self.names, counts, strict=True)}

    # -- public calls
    def predict_image(self, image: ImageInput) -> PredictionResult:
        """Predict one image (PIL image, HWC uint8 array, or path) at its original size."""
        path = str(image) if isinstance(image, str | Path) else None
        start = time.perf_counter()
        rgb = self.read(image)
        return self.predict_batch([rgb], [path], decode_seconds=[time.perf_counter() - start])[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        paths: Sequence[str | None] | None = None,
        decode_seconds: Sequence[float] | None = None,
    ) -> list[PredictionResult]:
        """Predict several images in one forward pass (they may differ in size); results in input order.

        Args:
            images: PIL images, HWC uint8 arrays or paths.
            paths: the source file of each image, recorded in the results.
            decode_seconds: time the caller spent reading each image, added to its ``seconds``.
        """
        if not images:
            return []
        if self.settings.slide:
            return [self._one_slide(im, i, paths, decode_seconds) for i, im in enumerate(images)]
        t0 = time.perf_counter()
        rgb = [self.read(im) for im in images]
        sizes = [image_hw(im) for im in rgb]
        batch = torch.stack([self.preprocess(im) for im in rgb])
        t1 = time.perf_counter()
        probs = self.probabilities(batch)
        t2 = time.perf_counter()
        # Everything before post-processing is shared by the batch; each image pays its own post-processing.
        shared = ((t2 - t1) + (t1 - t0)) / len(rgb)
        results = []
        for i, size in enumerate(sizes):
            t3 = time.perf_counter()
            mask, prob = self.postprocess(probs[i], size)
            seconds = shared + time.perf_counter() - t3
            if decode_seconds is not None:
                seconds += decode_seconds[i]
            results.append(
                PredictionResult(
                    mask=mask,
                    probs=prob.astype(np.float32, copy=False),
                    names=list(self.names),
                    seconds=seconds,
                    shares=self.shares(mask),
                    path=paths[i] if paths else None,
                )
            )
        return results

    def _one_slide(
        self, image: ImageInput, i: int, paths: Sequence[str | None] | None, decode: Sequence[float] | None
    ) -> PredictionResult:
        start = time.perf_counter()
        mask, prob = self.predict_slide(self.read(image))
        seconds = time.perf_counter() - start + (decode[i] if decode is not None else 0.0)
        path = paths[i] if paths else None
        return PredictionResult(
            mask, prob.astype(np.float32, copy=False), list(self.names), seconds, self.shares(mask), path
        )

    # -- rendering (shared by the CLI writer and the HTTP server)
    def mask_image(self, mask: np.ndarray) -> Image.Image:
        """A mask as a PNG-ready image: binary 0/255 mode ``L``, multi-class indices mode ``P`` with the palette."""
        if self.binary:
            return Image.fromarray((mask > 0).astype(np.uint8) * 255)
        image = Image.fromarray(mask.astype(np.uint8))
        flat = [v for colour in self.palette for v in colour]
        image.putpalette(flat + [0] * (768 - len(flat)))
        return image

    def overlay_image(self, image: ImageInput, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
        """Class colours blended over the image (background left untouched)."""
        rgb = display_rgb(self.read(image))
        return Image.fromarray(viz.overlay(rgb, mask, self.palette, alpha, ignore_index=-1, outline=True))


__all__ = ["Backend", "ImageInput", "PredictionResult", "Predictor", "warn"]
