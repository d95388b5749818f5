"""Full-resolution data: random training crops at a chosen scale, native-size evaluation samples, size advice.

Resizing a 4000x3000 photo to 224x224 throws away 99.6 % of its pixels, and with them thin or small objects.
Training instead on ``crop`` windows cut from the image scaled by ``train_scale`` (1 = native) keeps the detail;
inference then slides windows of the same size over the image at the same scale
(:mod:`mobileseg.engine.inference`), and metrics are computed at each image's own size (:class:`NativeDataset`).

Crops are biased towards what is rare: with probability ``crop_fg`` a crop is centred on a random labelled pixel
of a random foreground class present in the mask (classes drawn uniformly, so a rare class is as likely as a
common one), otherwise it is placed uniformly. An image smaller than the crop is padded (image 0, mask
``ignore_index``, so the loss skips the padding).

Example:
    >>> rng = np.random.default_rng(0)
    >>> img, mask = np.zeros((3, 50, 70), np.uint8), np.zeros((50, 70), np.uint8)
    >>> [tuple(a.shape) for a in random_crop(img, mask, (64, 64), 0.5, 255, rng)]
    [(3, 64, 64), (64, 64)]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mobileseg.config import DataConfig

from .bands import unit
from .dataset import SegmentationDataset, available_memory, cached_pixel_bytes, decode_sample, image_tensor
from .loading import SWAPPING_ORIENTATIONS, DataError, image_geometry
from .spec import DatasetSpec, Sample
from .transforms import SeededAugment


def native_size(sample: Sample) -> tuple[int, int]:
    """(H, W) of an image as displayed (EXIF orientation applied), from its header only."""
    (w, h), orient = image_geometry(sample.image)
    return (w, h) if orient in SWAPPING_ORIENTATIONS else (h, w)


def scaled(size: Sequence[int], scale: float) -> tuple[int, int]:
    """``size`` (H, W) times ``scale``, rounded, at least 1 pixel."""
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


def pad_to(
    image: np.ndarray, mask: np.ndarray, size: Sequence[int], ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad image (C, H, W) with 0 and mask (H, W) with ``ignore_index`` on the bottom/right to at least ``size``."""
    h, w = mask.shape
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if not ph and not pw:
        return image, mask
    image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
    mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, mask


def crop_origin(
    mask: np.ndarray, crop: Sequence[int], fg_prob: float, ignore_index: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Top-left (y, x) of a ``crop`` inside ``mask`` (H, W >= crop): centred on a random foreground pixel of a
    randomly chosen present class with probability ``fg_prob`` (clamped to the image), else uniform."""
    h, w = mask.shape
    ch, cw = int(crop[0]), int(crop[1])
    if rng.random() < fg_prob:
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        classes = [int(c) for c in present if c != 0 and c != ignore_index]
        if classes:
            ys, xs = np.nonzero(mask == classes[int(rng.integers(len(classes)))])
            k = int(rng.integers(len(ys)))
            y = min(max(0, int(ys[k]) - ch // 2), h - ch)
            x = min(max(0, int(xs[k]) - cw // 2), w - cw)
            return y, x
    return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))


def random_crop(
    image: np.ndarray,
    mask: np.ndarray,
    crop: Sequence[int],
    fg_prob: float,
    ignore_index: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop of an (image (C, H, W), mask (H, W)) pair: padded if smaller, placed by
    :func:`crop_origin`; returns the crop's image and mask (copies)."""
    image, mask = pad_to(image, mask, crop, ignore_index)
    y, x = crop_origin(mask, crop, fg_prob, ignore_index, rng)
    ch, cw = int(crop[0]), int(crop[1])
    return image[:, y : y + ch, x : x + cw].copy(), mask[y : y + ch, x : x + cw].copy()


class CropDataset(Dataset):
    """Random training crops of one split; ``epoch`` and the index seed each crop (and its augmentation), so a
    run is reproducible whatever the order, workers or ranks.

    Each image is decoded once at ``train_scale`` times its size (``train_scale`` None: resized to ``imgsz``,
    today's sizes) and kept in RAM when the split fits in a quarter of free memory (``cache`` 'ram' or 'auto';
    images of many sizes do not fit the fixed-size disk cache, so 'disk' decodes every time like 'none').

    Args:
        spec: the resolved dataset.
        split: usually 'train'.
        crop: (H, W) crop size.
        train_scale: scale of the whole image before cropping; None = resize to ``imgsz``.
        imgsz: the size images are resized to when ``train_scale`` is None.
        fg_prob: probability of a crop centred on a labelled non-background pixel (see :func:`crop_origin`).
        transform: ``(image, mask) -> (image, mask)`` augmentation applied to each crop.
        cache: 'ram', 'auto', 'disk' or 'none' (see above).
        seed: the run's seed.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        crop: Sequence[int],
        train_scale: float | None = None,
        imgsz: Sequence[int] = (224, 224),
        fg_prob: float = 0.5,
        transform: Callable | None = None,
        cache: str = "auto",
        seed: int = 0,
    ) -> None:
        if split not in spec.splits:
            raise DataError(f"{spec.source}: no split '{split}' (have: {', '.join(spec.splits)})")
        self.spec, self.split = spec, split
        self.samples: list[Sample] = list(spec.splits[split])
        self.crop = (int(crop[0]), int(crop[1]))
        self.imgsz = self.crop  # what the model eats
        self.train_scale, self.base = train_scale, (int(imgsz[0]), int(imgsz[1]))
        self.fg_prob, self.transform, self.seed, self.epoch = float(fg_prob), transform, int(seed), 0
        self._sizes: list[tuple[int, int] | None] = [None] * len(self.samples)
        per_pixel = cached_pixel_bytes(spec.channels)
        need = sum(per_pixel * h * w for h, w in map(self.size, range(len(self.samples)))) if cache != "none" else 0
        self.cache = "ram" if cache in ("ram", "auto") and need <= available_memory() // 4 else "none"
        self._ram: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def size(self, i: int) -> tuple[int, int]:
        """(H, W) sample ``i`` is decoded at (read from its header once)."""
        known = self._sizes[i]
        if known is None:
            if self.train_scale is None:
                known = self.base
            else:
                known = scaled(native_size(self.samples[i]), self.train_scale)
            self._sizes[i] = known
        return known

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self._ram:
            return self._ram[i]
        pair = decode_sample(self.spec, self.samples[i], self.size(i))
        if self.cache == "ram":
            with self._lock:
                self._ram[i] = pair
        return pair

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole scaled pair (uncropped): image ``[C, H, W]`` (uint8 RGB, or float32 in [0, 1] for other band
        counts, as :meth:`SegmentationDataset.load` gives them) and uint8 mask ``[H, W]`` (copies)."""
        img, mask = self._arrays(i)
        return image_tensor(img), torch.from_numpy(np.array(mask))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed = (self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**63
        rng = np.random.default_rng(seed)
        img_np, mask_np = self._arrays(i)
        img_np, mask_np = random_crop(img_np, mask_np, self.crop, self.fg_prob, self.spec.ignore_index, rng)
        img, mask = image_tensor(img_np), torch.from_numpy(mask_np)
        if self.transform is not None:
            torch.manual_seed(seed)
            img, mask = self.transform(img, mask)
        return unit(img), mask.long()

    def __repr__(self) -> str:
        scale = "imgsz" if self.train_scale is None else f"{self.train_scale:g}"
        return (
            f"CropDataset({self.spec.source!r}, split={self.split!r}, n={len(self)}, crop={self.crop}, scale={scale})"
        )


class NativeDataset(Dataset):
    """Pairs of one split at each image's own size, for slide-mode evaluation (batch size 1: sizes differ).

    ``dataset[i]`` = float image ``[C, H, W]`` in [0, 1] and int64 mask ``[H, W]``; ``load(i)`` the pair as
    :meth:`CropDataset.load` gives it (uint8 RGB, or float32 bands in [0, 1]).
    Nothing is cached: an evaluation reads each image once.

    Args:
        imgsz: recorded in reports as the input size (the slide window).
    """

    def __init__(self, spec: DatasetSpec, split: str, imgsz: Sequence[int] = (224, 224)) -> None:
        if split not in spec.splits:
            raise DataError(f"{spec.source}: no split '{split}' (have: {', '.join(spec.splits)})")
        self.spec, self.split = spec, split
        self.samples: list[Sample] = list(spec.splits[split])
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = decode_sample(self.spec, self.samples[i], native_size(self.samples[i]))
        return image_tensor(img), torch.from_numpy(np.array(mask))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.load(i)
        return unit(img), mask.long()


def train_val_datasets(
    cfg: DataConfig, spec: DatasetSpec, transform: Callable | None, seed: int, slide: bool
) -> tuple[Dataset, Dataset, Dataset]:
    """``(train base, train dataset, val dataset)`` of a run: crops (``crop=``) or whole images resized to
    ``imgsz``; the val split at each image's own size when validation slides (``slide``), else at ``imgsz``.

    The train base is what class counting reads (``load(i)``): the same object as the train dataset for crops,
    the un-augmented :class:`SegmentationDataset` under :class:`SeededAugment` otherwise.
    """
    if cfg.crop:
        base: Dataset = CropDataset(
            spec, "train", cfg.crop, cfg.train_scale, cfg.imgsz, cfg.crop_fg, transform, cfg.cache, seed
        )
        train: Dataset = base
    else:
        base = SegmentationDataset(spec, "train", cfg.imgsz, cache=cfg.cache)
        train = SeededAugment(base, transform, seed)  # type: ignore[arg-type]
    val = (
        NativeDataset(spec, "val", cfg.crop or cfg.imgsz)
        if slide
        else SegmentationDataset(spec, "val", cfg.imgsz, cache=cfg.cache)
    )
    return base, train, val


def size_advice(sizes: Sequence[tuple[int, int]], imgsz: Sequence[int]) -> list[str]:
    """Lines for ``check-data`` when images are much larger than ``imgsz``: how much a resize throws away and
    which crop / slide settings keep the detail. ``sizes`` are (W, H) as displayed; empty when nothing to say."""
    if not sizes:
        return []
    median_px = float(np.median([w * h for w, h in sizes]))
    model_px = imgsz[0] * imgsz[1]
    if median_px < 4 * model_px:
        return []
    lost = 1 - model_px / median_px
    side = min(512, max(imgsz) * 2)
    crop = max(imgsz[0], side - side % 32), max(imgsz[1], side - side % 32)
    scale = 0.5 if median_px > 16 * crop[0] * crop[1] * 4 else 1
    return [
        f"images are much larger than imgsz={imgsz[0]}x{imgsz[1]}: resizing keeps {1 - lost:.1%} of the median "
        f"image's pixels (throws away {lost:.1%})",
        f"to keep the detail, train on crops and predict with sliding windows: crop={crop[0]},{crop[1]} "
        f"train_scale={scale:g} crop_fg=0.5 (test and predict then use infer=slide by default)",
    ]


__all__ = [
    "CropDataset",
    "NativeDataset",
    "crop_origin",
    "native_size",
    "pad_to",
    "random_crop",
    "scaled",
    "size_advice",
    "train_val_datasets",
]
