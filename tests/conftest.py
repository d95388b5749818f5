"""Shared fixtures: small image/mask files written with PIL into the test's own tmp folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test``), give each worker its own share of the cores.

    Two processes that each run torch on both cores of a 2-core machine slow each other several times over.
    Pinned, a worker and everything it starts (``mobileseg`` subprocesses size their threads by
    ``os.sched_getaffinity``) behave as on a machine of their own. Tests that time thread counts or start one
    process per core are marked ``serial`` and run after the parallel pass, unpinned.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or count < 1 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if count > len(cores):
        return  # more workers than cores: pinning would stack them; leave it to the scheduler
    share = len(cores) // count
    index = int(worker[2:])
    mine = set(cores[index * share : (index + 1) * share])
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))


def _save(arr_or_img: np.ndarray | Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    im.save(path, **kwargs)
    return path


@pytest.fixture
def save_image() -> Callable[..., Path]:
    """``save_image(array_or_PIL, path, **save_kwargs)``: write an image, creating folders."""
    return _save


@pytest.fixture
def make_pair() -> Callable[..., tuple[Path, Path]]:
    """``make_pair(root, stem, mask=None, image=None, image_ext='.png', mask_ext='.png', sub='', seed=0)``.

    Writes ``root/[sub/]images/<stem><image_ext>`` and ``root/[sub/]masks/<stem><mask_ext>``. Defaults: a 24x32
    random RGB image and a 0/255 mask with a filled rectangle.
    """

    def make(
        root: Path,
        stem: str,
        mask: np.ndarray | None = None,
        image: np.ndarray | None = None,
        image_ext: str = ".png",
        mask_ext: str = ".png",
        sub: str = "",
        seed: int = 0,
    ) -> tuple[Path, Path]:
        rng = np.random.default_rng(seed)
        if mask is None:
            mask = np.zeros((24, 32), np.uint8)
            mask[6:18, 8:24] = 255
        if image is None:
            image = rng.integers(0, 256, (*mask.shape[:2], 3), dtype=np.uint8)
        base = root / sub if sub else root
        img_path = _save(image, base / "images" / f"{stem}{image_ext}")
        mask_path = _save(mask, base / "masks" / f"{stem}{mask_ext}")
        return img_path, mask_path

    return make


@pytest.fixture
def binary_folder(tmp_path: Path, make_pair) -> Path:
    """``images/`` + ``masks/`` with 20 pairs (0/255 masks), no split information."""
    root = tmp_path / "binary"
    for i in range(20):
        make_pair(root, f"im{i:02d}", seed=i)
    return root


@pytest.fixture
def one_thread():
    """One torch thread, for tests of tiny models: two threads on a busy 2-core machine stall on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
