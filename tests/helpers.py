"""Small made-up datasets shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobileseg.models import Segmenter

FAST = {"imgsz": 64, "batch": 4, "encoder_weights": "none", "cache": "ram", "workers": 0, "verbose": False}


def make_shapes_dataset(root: Path, n: int = 12, size: int = 64, classes: int = 2, seed: int = 0) -> Path:
    """Bright rectangles (foreground) on dark noise; masks 0/255 (binary) or class index per rectangle."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for c in range(1, classes):
            y, x = rng.integers(0, size // 2, 2)
            h, w = rng.integers(size // 4, size // 2, 2)
            colour = np.array([200, 60, 60]) if c == 1 else np.array([60, 200, 60]) if c == 2 else [60, 60, 200]
            img[y : y + h, x : x + w] = colour
            mask[y : y + h, x : x + w] = 255 if classes == 2 else c
        Image.fromarray(img).save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i:02d}.png")
    return root


def make_checkpoint(
    path: Path,
    num_classes: int = 1,
    names: list[str] | None = None,
    seed: int = 0,
    imgsz: tuple[int, int] = (64, 64),
    palette: list[list[int]] | None = None,
    config: dict | None = None,
) -> Path:
    """A tiny random-init model saved the way the trainer saves one.

    Random init gives logits of +-0.05; the head is scaled to a trained model's range so masks are not all one class.
    """
    torch.manual_seed(seed)
    model = Segmenter(num_classes, width_mult=0.35).eval()
    with torch.no_grad():
        model.decoder.head.weight.mul_(60)
    names = names or (["background", "pet"] if num_classes == 1 else [f"c{i}" for i in range(num_classes)])
    if palette is None and num_classes > 1:
        palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]][:num_classes]
    ckpt = model.to_checkpoint(names=names, imgsz=imgsz, ignore_index=255, palette=palette, config=config or {})
    torch.save(ckpt, path)
    return path
