"""Augmentation keeps image and mask aligned, fills outside pixels with ignore, and is off for evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from mobileseg.config import DataConfig
from mobileseg.data import PairTransform, SegmentationDataset, build_transforms, resolve_dataset

STRONG = DataConfig(hflip=0.5, vflip=0.5, degrees=30, scale=(0.6, 1.4), color_jitter=0.3)


def block_pair(seed: int = 0, size: int = 64, block: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A random binary block pattern as the mask, and an image whose pixels *are* that pattern (0 / 255), so
    the image alone tells where each mask class should be after any geometric transform."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 2, (size // block, size // block)).astype(np.uint8)
    grid[0, 0], grid[0, -1] = 1, 0  # asymmetric: a flip always changes it
    mask = np.kron(grid, np.ones((block, block), np.uint8))
    image = np.repeat(mask[None] * 255, 3, axis=0)
    return torch.from_numpy(image), torch.from_numpy(mask)


def agreement(image: torch.Tensor, mask: torch.Tensor, ignore: int = 255) -> float:
    """Share of labelled pixels where the image-derived class equals the returned mask."""
    derived = (image[0].int() > 128).to(mask.dtype)
    valid = mask != ignore
    return (derived[valid] == mask[valid]).float().mean().item()


def test_train_transform_keeps_image_and_mask_aligned():
    t = build_transforms(STRONG, train=True, ignore_index=255)
    assert isinstance(t, PairTransform)
    changed = 0
    for k in range(60):
        image, mask = block_pair(seed=k % 6)
        torch.manual_seed(k)
        out_img, out_mask = t(image, mask)  # plain tensors, as the trainer passes them
        assert out_img.shape == image.shape and out_img.dtype == torch.uint8
        assert out_mask.shape == mask.shape and out_mask.dtype == torch.uint8
        assert set(out_mask.unique().tolist()) <= {0, 1, 255}  # nearest: no blended labels
        assert agreement(out_img, out_mask) > 0.95, k
        changed += not torch.equal(out_mask, mask)
    assert changed > 50  # augmentation really ran


def test_the_alignment_check_catches_a_mask_left_behind():
    flip_image_only = v2.RandomHorizontalFlip(p=1.0)
    image, mask = block_pair()
    assert agreement(flip_image_only(image), mask) < 0.8
    assert agreement(image, mask.flip(-1)) < 0.8


def test_alignment_through_the_dataset(tmp_path, make_pair):
    for i in range(4):
        img, m = block_pair(seed=i)
        make_pair(tmp_path, f"b{i}", mask=(m.numpy() * 255), image=img.permute(1, 2, 0).numpy())
    spec = resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0))
    t = build_transforms(STRONG, train=True, ignore_index=spec.ignore_index)
    ds = SegmentationDataset(spec, "train", (64, 64), transform=t, cache="ram")
    for epoch in range(5):
        torch.manual_seed(epoch)
        for i in range(len(ds)):
            image, mask = ds[i]
            assert image.dtype == torch.float32 and mask.dtype == torch.int64
            assert agreement((image * 255).round(), mask) > 0.95


def test_zoom_out_fills_mask_with_ignore():
    cfg = DataConfig(hflip=0, degrees=0, scale=(0.5, 0.5), color_jitter=0)
    t = build_transforms(cfg, train=True, ignore_index=200)
    image, mask = block_pair()
    out_img, out_mask = t(image, mask)
    assert (out_mask[:8] == 200).all() and (out_mask[:, -8:] == 200).all()
    assert (out_img[:, :8] == 0).all()
    assert (out_mask[24:40, 24:40] != 200).all()


def test_colour_jitter_touches_the_image_only():
    cfg = DataConfig(hflip=0, degrees=0, scale=(1.0, 1.0), color_jitter=0.5)
    t = build_transforms(cfg, train=True)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    mask = torch.randint(0, 3, (32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    out_img, out_mask = t(image, mask)
    assert torch.equal(out_mask, mask) and not torch.equal(out_img, image)


@pytest.mark.parametrize(
    ("cfg", "train"),
    [
        (DataConfig(), False),
        (DataConfig(augment=False), True),
        (DataConfig(hflip=0, vflip=0, degrees=0, scale=(1.0, 1.0), color_jitter=0), True),
    ],
)
def test_no_transform_for_eval_or_when_off(cfg, train):
    assert build_transforms(cfg, train=train) is None
