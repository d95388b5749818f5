"""Small made-up datasets shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
