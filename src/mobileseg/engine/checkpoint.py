"""Checkpoints: written atomically, loaded without running code.

A checkpoint is a plain dict of tensors and builtin types (so ``torch.load(weights_only=True)`` accepts it):
``model`` (state dict), ``model_args`` (to rebuild the :class:`~mobileseg.models.Segmenter`), ``names``,
``imgsz``, ``config`` (the resolved run config), ``optimizer``, ``scheduler``, ``scaler``, ``epoch`` (epochs
completed), ``best_fitness``, ``history`` (one dict per epoch: the rows of results.csv), ``metrics``, ``rng``
and ``versions``.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from mobileseg import __version__
from mobileseg.models import safe_torch_load


def versions() -> dict[str, str]:
    import torchvision

    return {
        "mobileseg": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    A crash or SIGKILL mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only``); raise a clear error for anything else."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a mobileseg checkpoint (expected a dict with a 'model' entry)")
    return ckpt


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (results.csv is rewritten every epoch and must survive a kill)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
