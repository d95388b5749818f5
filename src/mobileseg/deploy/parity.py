"""Does an exported model compute what the PyTorch model computes? Probabilities and masks, compared.

Example:
    >>> import torch
    >>> from mobileseg.models import Segmenter
    >>> model = Segmenter(num_classes=1).eval()
    >>> compare(model, model, torch.rand(2, 3, 64, 64))
    (0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.engine.metrics import logits_to_pred
from mobileseg.errors import ExportError

from .runtimes import (
    PHONE_SUFFIXES,
    TORCHSCRIPT_SUFFIXES,
    Backend,
    OnnxBackend,
    TorchBackend,
    load_torchscript,
    open_phone_model,
)

PROB_ATOL = 1e-4  # max |p_export - p_torch|: float32 reordering gives ~1e-6; a wrong op gives >> 1e-3
MASK_DIFF_MAX = 1e-3  # share of mask pixels allowed to differ (pixels sitting exactly on the threshold)


@dataclass
class ParityReport:
    """How closely an exported model follows the PyTorch model on the same images.

    Attributes:
        max_abs_diff: largest absolute difference of probabilities (sigmoid / softmax of the logits).
        mask_diff_fraction: share of mask pixels (after threshold / argmax) that differ.
        ok: both figures within tolerance.
        images: number of images compared.
        atol, max_mask_diff: the tolerances applied.
    """

    max_abs_diff: float
    mask_diff_fraction: float
    ok: bool
    images: int = 0
    atol: float = PROB_ATOL
    max_mask_diff: float = MASK_DIFF_MAX

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"max |dp| {self.max_abs_diff:.2e} (limit {self.atol:.0e}), mask pixels different "
            f"{100 * self.mask_diff_fraction:.3f} % (limit {100 * self.max_mask_diff:.1f} %) on {self.images} "
            f"images: {verdict}"
        )


def open_exported(path: str | Path, threads: int | None = None) -> Backend:
    """A backend for an exported file: ONNX Runtime for ``.onnx``, PyTorch for TorchScript."""
    path = Path(path)
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        return TorchBackend(load_torchscript(path)[0])
    if path.suffix.lower() in PHONE_SUFFIXES:
        return open_phone_model(path, threads)
    return OnnxBackend(path, threads)


def as_batch(images: torch.Tensor | Sequence[torch.Tensor] | np.ndarray) -> torch.Tensor:
    """Images as float (N, 3, H, W) in [0, 1], from float or uint8 tensors/arrays or a list of (3, H, W)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        images = torch.stack([torch.as_tensor(im) for im in images])
    if images.ndim == 3:
        images = images[None]
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)


def compare(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor | Sequence[torch.Tensor],
    conf: float = 0.5,
    chunk: int = 4,
) -> tuple[float, float]:
    """``(max |probability difference|, share of differing mask pixels)`` of two models on the same images."""
    batch = as_batch(images)
    max_abs, differ, total = 0.0, 0, 0
    for start in range(0, batch.shape[0], chunk):
        x = batch[start : start + chunk]
        with torch.inference_mode():
            a, b = reference(x).float().cpu(), candidate(x).float().cpu()
        if a.shape != b.shape:
            raise ExportError(f"output shapes differ: {tuple(a.shape)} (reference) vs {tuple(b.shape)} (export)")
        max_abs = max(max_abs, (probabilities(a) - probabilities(b)).abs().max().item())
        differ += (logits_to_pred(a, conf) != logits_to_pred(b, conf)).sum().item()
        total += a.shape[0] * a.shape[2] * a.shape[3]
    return max_abs, differ / max(1, total)


def check_parity(
    torch_model: nn.Module,
    onnx_path: str | Path,
    images: torch.Tensor | Sequence[torch.Tensor],
    conf: float = 0.5,
    atol: float = PROB_ATOL,
    max_mask_diff: float = MASK_DIFF_MAX,
    threads: int | None = None,
) -> ParityReport:
    """Run the PyTorch model and an exported file (ONNX, or TorchScript by suffix) on ``images`` and compare.

    Args:
        torch_model: the reference model (put in eval mode, run on the CPU).
        onnx_path: the exported file.
        images: float (N, 3, H, W) in [0, 1] at a size the model accepts (uint8 is scaled), or a list of (3, H, W).
        conf: foreground threshold of a binary model's mask.
        atol: largest allowed probability difference.
        max_mask_diff: largest allowed share of differing mask pixels (exclusive).

    Example:
        >>> report = check_parity(model, "best.onnx", torch.rand(4, 3, 224, 224))  # doctest: +SKIP
        >>> report.ok, report.max_abs_diff  # doctest: +SKIP
        (True, 3.5e-07)
    """
    model = torch_model.eval().cpu()
    exported = open_exported(onnx_path, threads)
    max_abs, fraction = compare(model, exported, images, conf)
    ok = bool(max_abs <= atol and fraction < max_mask_diff)
    return ParityReport(max_abs, fraction, ok, as_batch(images).shape[0], atol, max_mask_diff)


__all__ = ["MASK_DIFF_MAX", "PROB_ATOL", "ParityReport", "as_batch", "check_parity", "compare", "open_exported"]
