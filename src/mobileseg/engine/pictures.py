"""Pictures of a model's predictions on dataset samples: the grids of ``val_predictions.png`` (training) and of
the test report's ``predictions.png`` / ``worst.png``, with the dataset's display colours.

Split from :mod:`mobileseg.engine.evaluator` (which scores; this draws), so the trainer's callbacks take the
pictures without the scoring loop.

Example:
    >>> from mobileseg.data import resolve_dataset
    >>> len(palette_for(resolve_dataset(None)))  # the bundled pets sample: background, pet
    2
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mobileseg import viz
from mobileseg.data import DatasetSpec, SegmentationDataset
from mobileseg.data.bands import display_rgb, unit
from mobileseg.data.loading import SWAPPING_ORIENTATIONS, image_geometry
from mobileseg.engine.metrics import logits_to_pred
from mobileseg.errors import DataError
from mobileseg.palette import default_palette

Model = Callable[[torch.Tensor], torch.Tensor]  # float images (N, 3, H, W) in [0, 1] -> logits (N, C, H, W)


def prediction_grid(
    model: Model,
    dataset: SegmentationDataset,
    indices: list[int],
    path: Path,
    palette: list[tuple[int, int, int]],
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    titles: list[str] | None = None,
    *,
    title: str | None = None,
    note: str = "",
    ious: list[float] | None = None,
) -> Path:
    """Predict the given samples (no augmentation) and draw them at their true aspect ratio, with a legend:
    image | truth | prediction | overlay with outlines | right-and-wrong map (see :func:`mobileseg.viz`)."""
    images, targets, preds = [], [], []
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    with torch.inference_mode():
        for i in indices:
            image, mask = dataset.load(i)
            x = unit(image)  # uint8 RGB or float bands -> [0, 1]
            logits = model(x.unsqueeze(0).to(device))
            preds.append(logits_to_pred(logits, threshold)[0].cpu().numpy().astype(np.uint8))
            images.append(display_rgb(x.mul(255).round().byte().permute(1, 2, 0).numpy()))
            targets.append(mask.numpy())
    if isinstance(model, torch.nn.Module):
        model.train(was_training)
    spec = dataset.spec
    return viz.plot_prediction_grid(
        images,
        targets,
        preds,
        path,
        palette,
        titles or [dataset.samples[i].stem for i in indices],
        spec.ignore_index,
        names=spec.names,
        sizes=[display_size(dataset.samples[i].image) for i in indices],
        title=title,
        note=note,
        ious=ious,
    )


def display_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an image as displayed (EXIF orientation applied), read from its header only."""
    try:
        (w, h), orient = image_geometry(path)
    except (DataError, OSError):
        return None
    return (w, h) if orient in SWAPPING_ORIENTATIONS else (h, w)


def palette_for(spec: DatasetSpec) -> list[tuple[int, int, int]]:
    """Display colours of a dataset's classes: its ``colors``, else its mask ``palette``, else the default."""
    if spec.colors:
        return [tuple(c) for c in spec.colors]
    if spec.palette and len(spec.palette) >= spec.num_classes:
        return [tuple(c) for c in spec.palette[: spec.num_classes]]
    return default_palette(spec.num_classes, spec.names)
