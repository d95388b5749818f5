"""Real images for parity checks and int8 calibration: the model's own dataset first, then ``source=``, then noise.

Which dataset is "the model's own" is decided once, by :func:`mobileseg.models.model_file.trained_data`, the same
rule ``mobileseg test`` uses, so export checks and scores exactly the images ``test`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mobileseg.config import Config
from mobileseg.data import DatasetSpec, SegmentationDataset, to_rgb
from mobileseg.data.bands import RGB_CHANNELS, read_image_input, resize_bands, unit, unit_tensor
from mobileseg.engine.predict_run import resolve_source
from mobileseg.errors import MobilesegError
from mobileseg.models.model_file import load_trained_dataset, trained_data


@dataclass
class ImageSet:
    """Images at model size (float (N, C, H, W) in [0, 1]) and a few words on where they came from."""

    images: torch.Tensor
    origin: str


def open_dataset(ckpt: Mapping[str, Any], cfg: Config, imgsz: Sequence[int]) -> tuple[DatasetSpec | None, str]:
    """``(DatasetSpec or None, reason)`` of the model's own dataset and split (see ``trained_data``).

    A dataset that is not reachable here is not an error for an export, only a note: the checks then fall back
    to ``source=`` images or noise.
    """
    trained = trained_data(ckpt, cfg, imgsz)
    if trained is None:
        return None, "the checkpoint names no dataset"
    try:
        return load_trained_dataset(trained), ""
    except (MobilesegError, OSError) as e:
        return None, f"dataset not reachable ({str(e).splitlines()[0][:160]})"


def split_images(
    spec: DatasetSpec | None, splits: str | Sequence[str], imgsz: tuple[int, int], n: int
) -> ImageSet | None:
    """Up to ``n`` images decoded at model size, spread evenly over the first split, topped up from the next ones.

    Deterministic (the same images on every run); None when the splits are empty or the dataset is missing.
    """
    if not spec:
        return None
    tensors: list[torch.Tensor] = []
    used: list[str] = []
    for split in [splits] if isinstance(splits, str) else splits:
        want = n - len(tensors)
        if want <= 0 or not spec.splits.get(split):
            continue
        ds = SegmentationDataset(spec, split, imgsz, cache="none")
        idx = np.unique(np.linspace(0, len(ds) - 1, min(want, len(ds))).round().astype(int))
        tensors += [ds.load(int(i))[0] for i in idx]
        used.append(f"{len(idx)} {split}")
    if not tensors:
        return None
    return ImageSet(torch.stack([unit(t) for t in tensors]), f"{' + '.join(used)} images of {spec.source}")


def source_images(source: str | None, imgsz: tuple[int, int], n: int, channels: int = 3) -> ImageSet | None:
    """Up to ``n`` readable images from ``source=``, resized to the model size and read with the model's
    ``channels`` as prediction reads them; None if there are none."""
    if not source:
        return None
    from PIL import Image

    files, _ = resolve_source(source)
    h, w = imgsz
    tensors = []
    for f in files:
        if len(tensors) >= n:
            break
        try:
            if channels != RGB_CHANNELS:
                tensors.append(unit_tensor(resize_bands(read_image_input(f, channels), (h, w))))  # type: ignore[arg-type]
                continue
            im = to_rgb(f).resize((w, h), Image.Resampling.BILINEAR)
        except (OSError, ValueError, SyntaxError):  # DataError is a ValueError too
            continue
        tensors.append(unit(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)))
    if not tensors:
        return None
    return ImageSet(torch.stack(tensors), f"{len(tensors)} images from {source}")


def noise_images(imgsz: tuple[int, int], n: int, seed: int = 0, channels: int = 3) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.rand(n, channels, *imgsz, generator=g), f"{n} random-noise images")


__all__ = ["ImageSet", "noise_images", "open_dataset", "source_images", "split_images"]
