"""Prediction on new images at their original size, from a checkpoint (``.pt``), ONNX or TorchScript model.

One :class:`Predictor` serves the command line, the Python API and the HTTP server. It owns a *backend* (PyTorch
for checkpoints and TorchScript files, ONNX Runtime for ``.onnx``) and the model's metadata (:class:`ModelInfo`:
class names, input size, palette), so the same pre- and post-processing runs whatever the file is, and a ``.pt``
and its exported ``.onnx`` give the same masks.

Pre-processing: RGB (grayscale and RGBA are converted, EXIF orientation honoured), resized bilinearly to the
model's input size, float in [0, 1], NCHW; the model normalises internally. Post-processing: sigmoid (binary) or
softmax probabilities are upsampled *bilinearly* to the image's original size and only then thresholded
(``conf``) or arg-maxed, which gives smoother, more accurate edges than nearest-resizing a small mask.

Example:
    >>> from mobileseg.engine.predictor import Predictor
    >>> p = Predictor("runs/train/exp/weights/best.pt")  # doctest: +SKIP
    >>> r = p.predict_image("cat.jpg")  # doctest: +SKIP
    >>> r.mask.shape, r.shares  # doctest: +SKIP
    ((375, 500), {'background': 0.71, 'pet': 0.29})
"""

from __future__ import annotations

import csv
import glob
import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from mobileseg import __version__, viz
from mobileseg.config import Config, default_threads, resolve_config
from mobileseg.engine.runtime import increment_path, prepare

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LIST_SUFFIXES = (".txt",)
TORCHSCRIPT_SUFFIXES = (".torchscript", ".ts", ".jit")
PREPROCESSING = "RGB float [0,1], NCHW, normalisation inside the model"
METADATA_FILE = "mobileseg.json"  # name of the metadata entry inside a TorchScript archive
INPUT_NAME, OUTPUT_NAME = "images", "logits"

ImageInput = Image.Image | np.ndarray | str | Path


def warn(message: str) -> None:
    """A warning line on stderr (through tqdm, so an active progress bar is not torn apart)."""
    from tqdm import tqdm

    tqdm.write(f"WARNING: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about a model beyond its weights.

    Stored in checkpoints (as separate keys), in ONNX files (``metadata_props``) and in TorchScript archives
    (an extra file), so any exported model can be used without the checkpoint it came from.

    Args:
        names: class names including the background (2 names for a binary model).
        imgsz: the input size (H, W) the model was trained at.
        binary: one output channel with a sigmoid (else C channels with a softmax).
        out_channels: the model's output channels (1 for binary).
        palette: one RGB colour per class, for masks and overlays.
        ignore_index: the label value that marks unlabelled pixels in the training masks.
        dynamic_hw: whether the exported graph accepts other (multiple-of-32) input sizes.
    """

    names: list[str]
    imgsz: tuple[int, int]
    binary: bool
    out_channels: int
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    dynamic_hw: bool = True

    @property
    def num_classes(self) -> int:
        """Classes of the mask (2 for a binary model: background and foreground)."""
        return 2 if self.binary else self.out_channels

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], model: torch.nn.Module | None = None) -> ModelInfo:
        """Metadata of a checkpoint dict; the model fills gaps (older or hand-made checkpoints)."""
        out_channels = int(getattr(model, "num_classes", 0) or _out_channels_from_state(ckpt))
        binary = bool(getattr(model, "binary", out_channels == 1))
        imgsz = ckpt.get("imgsz") or getattr(model, "imgsz", None) or (224, 224)
        names = ckpt.get("names") or getattr(model, "names", None)
        return cls.build(names, imgsz, binary, out_channels, ckpt.get("palette"), ckpt.get("ignore_index", 255))

    @classmethod
    def build(
        cls,
        names: Sequence[str] | None,
        imgsz: Sequence[int],
        binary: bool,
        out_channels: int,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = 255,
        dynamic_hw: bool = True,
    ) -> ModelInfo:
        """Fill defaults: generic class names and the default palette when none were stored."""
        num_classes = 2 if binary else out_channels
        if not names or len(names) != num_classes:
            names = ["background", "foreground"] if binary else [f"class_{i}" for i in range(num_classes)]
        if not palette or len(palette) < num_classes:
            palette = viz.default_palette(num_classes)
        return cls(
            names=[str(n) for n in names],
            imgsz=(int(imgsz[0]), int(imgsz[1])),
            binary=bool(binary),
            out_channels=int(out_channels),
            palette=[(int(c[0]), int(c[1]), int(c[2])) for c in palette],
            ignore_index=255 if ignore_index is None else int(ignore_index),
            dynamic_hw=bool(dynamic_hw),
        )

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` (JSON where the value is structured)."""
        return {
            "mobileseg_version": __version__,
            "names": json.dumps(self.names),
            "imgsz": json.dumps(list(self.imgsz)),
            "preprocessing": PREPROCESSING,
            "output": "logits (N, C, H, W): sigmoid when binary (C=1), softmax otherwise",
            "binary": json.dumps(self.binary),
            "out_channels": str(self.out_channels),
            "num_classes": str(self.num_classes),
            "palette": json.dumps([list(c) for c in self.palette]),
            "ignore_index": str(self.ignore_index),
            "dynamic_hw": json.dumps(self.dynamic_hw),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelInfo:
        """Inverse of :meth:`to_metadata`; raises :class:`ValueError` naming the file when keys are missing."""
        missing = [k for k in ("names", "imgsz", "binary", "out_channels") if k not in meta]
        if missing:
            raise ValueError(
                f"{source} has no mobileseg metadata ({', '.join(missing)} missing); "
                f"export it with 'mobileseg export weights=<best.pt>'"
            )
        return cls.build(
            json.loads(meta["names"]),
            json.loads(meta["imgsz"]),
            json.loads(meta["binary"]),
            int(meta["out_channels"]),
            json.loads(meta["palette"]) if meta.get("palette") else None,
            int(meta.get("ignore_index", 255)),
            json.loads(meta.get("dynamic_hw", "true")),
        )


def _out_channels_from_state(ckpt: dict[str, Any]) -> int:
    """Output channels from the last bias of the state dict (the decoder head), for checkpoints without args."""
    state = ckpt.get("model") or {}
    for key in reversed(list(state)):
        if key.endswith("bias") and state[key].ndim == 1:
            return int(state[key].shape[0])
    return 1


# ------------------------------------------------------------------------------------------------- backends
class Backend(Protocol):
    """Runs the network: float32 NCHW images in [0, 1] -> float32 logits (N, C, H, W) on the CPU."""

    kind: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class TorchBackend:
    """A PyTorch module (eager Segmenter or TorchScript) on a device, in inference mode."""

    kind = "torch"

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(images.to(self.device, torch.float32)).float().cpu()


class OnnxBackend:
    """An ONNX Runtime session with the session options that make it fast on a small CPU."""

    kind = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.session = ort_session(self.path, threads, device)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def ort_session(path: str | Path, threads: int | None = None, device: torch.device | str = "cpu") -> Any:
    """ONNX Runtime session: all graph optimisations, ``threads`` intra-op threads, sequential execution.

    Why these options: the default intra-op pool size is the number of *physical* cores seen by ORT, which can
    exceed what this process may use (containers, shared machines); one inter-op thread and sequential execution
    avoid oversubscribing a small CPU, and ORT_ENABLE_ALL fuses Conv+BN+ReLU and picks the NCHWc kernels.
    Spinning is off: ORT's pool threads otherwise busy-wait after every run, stealing the cores from whatever
    runs next (another session, PyTorch, the web server). Measured on 2 cores: alone, the same images/s with and
    without spinning (fp32 85.6 vs 85.2, int8 210 vs 220); interleaved with other backends, PyTorch's batch-1
    latency measured 53 ms next to spinning ORT sessions and 17.5 ms without them.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: ORT's shape-inference notices are noise to a user
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def load_backend(
    weights: str | Path, device: torch.device | str = "cpu", threads: int | None = None
) -> tuple[Backend, ModelInfo]:
    """Open a model file: a mobileseg checkpoint (``.pt``/``.pth``), an ONNX or a TorchScript export.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an exported file without mobileseg metadata.
        WeightsError: a checkpoint that cannot be read safely.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        backend = OnnxBackend(path, threads, device)
        return backend, ModelInfo.from_metadata(backend.metadata, str(path))
    if suffix in TORCHSCRIPT_SUFFIXES:
        extra = {METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the way to load
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra[METADATA_FILE] or "{}")
        return TorchBackend(module, device), ModelInfo.from_metadata(meta, str(path))
    from mobileseg.engine.checkpoint import load_checkpoint
    from mobileseg.models import Segmenter

    ckpt = load_checkpoint(path)
    model = Segmenter.from_checkpoint(ckpt, source=str(path))
    return TorchBackend(model, device), ModelInfo.from_checkpoint(ckpt, model)


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


def to_rgb(image: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image (paths go through :func:`mobileseg.data.load_image`)."""
    if isinstance(image, str | Path):
        from mobileseg.data import load_image

        return load_image(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
        if arr.dtype != np.uint8:  # floats in [0, 1]
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation: phone photos are stored sideways
        image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


class Predictor:
    """Segments images with any mobileseg model file; thread-safe and cheap to call repeatedly.

    The model is loaded once; each call only pre-processes, runs the backend under a lock (one inference at a
    time: a torch module and a CPU thread pool are not made for concurrent calls, and concurrent calls would
    only fight over the same cores) and post-processes outside it.

    Args:
        weights: a checkpoint (``best.pt``), an ONNX export (``best.onnx``) or a TorchScript export.
        device: ``cpu``, ``cuda``... (ONNX models run on ONNX Runtime's CPU provider unless CUDA's is installed).
        conf: foreground threshold of a binary model.
        tta: average the probabilities of the image and its horizontal flip (twice the compute).
        threads: torch/ORT intra-op threads; ``None`` leaves torch's setting alone and gives ORT the cores.

    Example:
        >>> p = Predictor("best.onnx")  # doctest: +SKIP
        >>> result = p.predict_image("dog.jpg")  # doctest: +SKIP
        >>> result.mask.shape, result.names  # doctest: +SKIP
        ((500, 375), ['background', 'pet'])
    """

    def __init__(
        self,
        weights: str | Path,
        device: torch.device | str = "cpu",
        conf: float = 0.5,
        tta: bool = False,
        threads: int | None = None,
    ) -> None:
        if not 0 < conf < 1:
            raise ValueError(f"conf must be in (0, 1), got {conf}")
        if threads:
            torch.set_num_threads(threads)
        self.weights = Path(weights)
        self.backend, self.info = load_backend(weights, device, threads)
        self.conf = float(conf)
        self.tta = bool(tta)
        self._lock = threading.Lock()

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

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.weights)!r}, backend={self.backend.kind}, imgsz={self.imgsz}, "
            f"names={self.names}, tta={self.tta})"
        )

    # -- steps
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float (3, H, W) in [0, 1] at the model's input size."""
        h, w = self.imgsz
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Model-size probabilities (N, C, h, w) of a preprocessed batch; C = 1 for a binary model.

        With TTA, the flipped copies run in the same batch and their output is flipped back before averaging.
        """
        x = torch.cat([batch, batch.flip(-1)]) if self.tta else batch
        with self._lock:
            logits = self.backend(x)
        probs = logits.sigmoid() if self.binary else logits.softmax(1)
        if self.tta:
            n = batch.shape[0]
            probs = (probs[:n] + probs[n:].flip(-1)) / 2
        return probs

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
        rgb = to_rgb(image)
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
        t0 = time.perf_counter()
        rgb = [to_rgb(im) for im in images]
        sizes = [(im.height, im.width) for im in rgb]
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
        rgb = np.asarray(to_rgb(image))
        return Image.fromarray(viz.overlay(rgb, mask, self.palette, alpha, ignore_index=-1))


# ---------------------------------------------------------------------------------------------------- sources
def resolve_source(source: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image paths named by ``source``: a file, a folder (its images, sorted), a glob, or a ``.txt`` list file.

    Entries of a list file that do not exist are returned as ``(entry, reason)`` so they are reported, not fatal.
    Relative entries in a list file are read relative to the list file's folder (then to the working directory).

    Raises:
        FileNotFoundError: ``source`` matches nothing.
    """
    if isinstance(source, Sequence) and not isinstance(source, str):
        files, missing = [], []
        for item in source:
            f, m = resolve_source(item) if Path(item).is_dir() else _one_file(Path(item))
            files += f
            missing += m
        return files, missing
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), []
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        files, missing = [], []
        for line in path.read_text().splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            candidate = Path(entry).expanduser()
            if not candidate.is_absolute() and not candidate.exists():
                candidate = path.parent / candidate
            f, m = _one_file(candidate)
            files += f
            missing += [(entry, reason) for _, reason in m]
        return files, missing
    if path.is_file():
        return [path], []
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        return [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES], []
    raise FileNotFoundError(f"source not found: {text} (expected an image, a folder, a glob or a .txt list)")


def _one_file(path: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    return ([path], []) if path.is_file() else ([], [(str(path), "file not found")])


def _batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------------------------------------------- command
@dataclass
class PredictRun:
    """What ``predict`` did: one :class:`PredictionResult` per image, the output folder and the skipped inputs.

    Iterating over it, ``len()`` and indexing go to ``results``.
    """

    results: list[PredictionResult]
    save_dir: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self) -> Iterator[PredictionResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> PredictionResult:
        return self.results[i]


class _Writer:
    """Writes each image's files as soon as it is predicted, and predictions.csv row by row (a crash keeps them)."""

    def __init__(self, predictor: Predictor, save_dir: Path, save_probs: bool) -> None:
        self.predictor, self.save_dir, self.save_probs = predictor, save_dir, save_probs
        self.used: set[str] = set()
        info = predictor.info
        self.share_keys = [info.names[1]] if info.binary else list(info.names)
        share_cols = ["foreground_share"] if info.binary else [f"share_{n}" for n in info.names]
        self.csv_file = open(save_dir / "predictions.csv", "w", newline="")  # noqa: SIM115 (closed in close())
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["file", "width", "height", *share_cols, "seconds"])

    def _stem(self, path: Path) -> str:
        # Two inputs with the same stem (a.jpg, a.png, or a folder glob) must not overwrite each other's outputs.
        stem, n = path.stem, 2
        while stem in self.used:
            stem, n = f"{path.stem}_{n}", n + 1
        self.used.add(stem)
        return stem

    def write(self, result: PredictionResult, image: Image.Image) -> None:
        stem = self._stem(Path(result.path or "image"))
        self.predictor.mask_image(result.mask).save(self.save_dir / f"{stem}_mask.png")
        self.predictor.overlay_image(image, result.mask).save(self.save_dir / f"{stem}_overlay.jpg", quality=90)
        if self.save_probs:
            np.save(self.save_dir / f"{stem}_probs.npy", result.probs.astype(np.float16))
        shares = [f"{result.shares[k]:.6f}" for k in self.share_keys]
        self.csv.writerow([result.path, result.width, result.height, *shares, f"{result.seconds:.4f}"])
        self.csv_file.flush()

    def close(self) -> None:
        self.csv_file.close()


def predict(cfg: Config | dict[str, Any] | str | None = None, **overrides: Any) -> PredictRun:
    """Segment new images at their original size and write masks, overlays and ``predictions.csv``.

    ``weights`` is a checkpoint or an exported model, ``source`` an image, folder, glob or ``.txt`` list of paths.
    Images are processed in batches of ``batch``; an unreadable image is reported and skipped, never fatal.

    Output folder (``out``, default ``runs/predict/expN``): ``<stem>_mask.png`` (binary: 0/255; multi-class:
    class indices with the palette), ``<stem>_overlay.jpg``, ``<stem>_probs.npy`` (float16, with
    ``save_probs=true``) and ``predictions.csv`` (file, width, height, class pixel shares, seconds).

    Example:
        >>> run = mobileseg.predict(weights="best.pt", source="photos/")  # doctest: +SKIP
        >>> run.save_dir, [r.shares for r in run]  # doctest: +SKIP
    """
    cfg = resolve_config(cfg, overrides)
    rt, pc = cfg.runtime, cfg.predict
    if not rt.weights:
        raise ValueError("no model given: pass weights=<best.pt or model.onnx>")
    if not pc.source:
        raise ValueError("no images given: pass source=<image, folder, glob or .txt list of paths>")
    log = print if rt.verbose else (lambda *a, **k: None)
    _, device, threads = prepare(rt)
    predictor = Predictor(rt.weights, device=device, conf=pc.conf, tta=pc.tta, threads=threads)
    files, skipped = resolve_source(pc.source)
    for entry, reason in skipped:
        warn(f"skipped {entry}: {reason}")
    if not files:
        raise FileNotFoundError(f"no images found in {pc.source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    save_dir = Path(pc.out) if pc.out else increment_path(Path(rt.project) / "predict", rt.name, rt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    log(
        f"predict: {len(files)} images with {predictor.weights.name} ({predictor.backend.kind}, "
        f"{threads} threads, input {predictor.imgsz[0]}x{predictor.imgsz[1]}{', TTA' if pc.tta else ''})"
    )

    from tqdm import tqdm

    from mobileseg.data import DataError

    writer = _Writer(predictor, save_dir, pc.save_probs)
    results: list[PredictionResult] = []
    start = time.perf_counter()
    progress = tqdm(
        total=len(files), desc="  predict", leave=False, disable=None if rt.verbose else True
    )  # None: bars only on a terminal
    try:
        for chunk in _batched(files, cfg.train.batch):
            images, paths, decode = [], [], []
            for path in chunk:
                t = time.perf_counter()
                try:
                    images.append(to_rgb(path))
                except (DataError, OSError, ValueError, SyntaxError) as e:  # never abort a batch for one file
                    reason = str(e).split("\n")[0] or type(e).__name__
                    warn(f"skipped {path}: {reason}")
                    skipped.append((str(path), reason))
                    continue
                paths.append(str(path))
                decode.append(time.perf_counter() - t)
            for result, image in zip(
                predictor.predict_batch(images, paths, decode_seconds=decode), images, strict=True
            ):
                writer.write(result, image)
                results.append(result)
            progress.update(len(chunk))
    finally:
        progress.close()
        writer.close()
    seconds = time.perf_counter() - start
    rate = len(results) / seconds if seconds > 0 else math.nan
    log(f"{len(results)} images predicted in {seconds:.1f} s ({rate:.1f} images/s)")
    if skipped:
        lines = "\n".join(f"  {entry}: {reason}" for entry, reason in skipped)
        warn(f"{len(skipped)} input(s) skipped:\n{lines}")
    log(f"Results saved to {save_dir}")
    return PredictRun(results, save_dir, skipped, seconds)


__all__ = [
    "ModelInfo",
    "OnnxBackend",
    "PredictRun",
    "PredictionResult",
    "Predictor",
    "TorchBackend",
    "load_backend",
    "ort_session",
    "predict",
    "resolve_source",
]
