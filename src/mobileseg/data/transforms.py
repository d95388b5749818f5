"""Training augmentation: one random geometry applied to image and mask together.

Runs on the cached uint8 ``[3, H, W]`` tensors at model size, so an augmented epoch costs a few milliseconds per
sample and never re-decodes a JPEG. Image and mask are wrapped as ``tv_tensors.Image`` / ``tv_tensors.Mask``
inside :class:`PairTransform`: torchvision.transforms.v2 passes a *plain* second tensor through untouched, which
would flip an image without its mask. Masks are always resampled with nearest-neighbour (v2 does that for
``Mask``), and pixels that come from outside the picture get ``ignore_index`` so the loss skips them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from mobileseg.config import DataConfig

from .bands import unit
from .dataset import SegmentationDataset


class PairTransform:
    """Apply a v2 transform to an (image, mask) pair; returns plain uint8 tensors of the same shapes.

    Args:
        transform: a v2 transform (e.g. ``v2.Compose``) that handles ``tv_tensors.Image`` and ``Mask``.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        squeeze = mask.ndim == 2
        img, msk = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask[None] if squeeze else mask))
        img, msk = img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)
        return img, (msk[0] if squeeze else msk)

    def __repr__(self) -> str:
        return f"PairTransform({self.transform})"


def build_transforms(cfg: DataConfig, train: bool, ignore_index: int = 255) -> Callable | None:
    """The augmentation for a split, or ``None`` when there is nothing to do (val/test, or ``augment=False``).

    Order: flips, then one affine (zoom ``scale`` and rotation ``+-degrees`` about the centre; bilinear for the
    image, nearest for the mask, outside pixels = ``ignore_index`` in the mask and black in the image), then
    colour jitter (brightness/contrast/saturation, image only; grey and RGB input only).
    """
    if not train or not cfg.augment:
        return None
    steps: list[Callable] = []
    if cfg.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=cfg.hflip))
    if cfg.vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=cfg.vflip))
    scale = tuple(cfg.scale)
    if cfg.degrees > 0 or scale != (1.0, 1.0):
        steps.append(
            v2.RandomAffine(
                degrees=cfg.degrees,
                scale=scale if scale != (1.0, 1.0) else None,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
            )
        )
    if cfg.color_jitter > 0 and cfg.channels in (1, 3):  # torchvision's colour ops take grey or RGB only
        j = cfg.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if not steps:
        return None
    return PairTransform(v2.Compose(steps))


class SeededAugment(Dataset):
    """Applies the train transform with a seed per (epoch, sample), independent of order, workers and ranks."""

    def __init__(self, base: SegmentationDataset, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.samples = base.samples

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.base.load(i)
        if self.transform is not None:
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**63)
            image, mask = self.transform(image, mask)
        return unit(image), mask.long()
