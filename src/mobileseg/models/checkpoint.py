"""The checkpoint schema: the one place where a trained-model file (``best.pt``/``last.pt``) is written and read.

A checkpoint is a plain dict of tensors and builtin types, so ``torch.load(weights_only=True)`` accepts it and
no code ever runs on loading. Entries (``format_version`` 2):

* always: ``format_version``, ``model`` (state dict), ``model_args`` (constructor arguments of
  :class:`~mobileseg.models.Segmenter`, ``encoder_weights=None``), ``names``, ``imgsz`` ([H, W]),
  ``ignore_index``, ``palette`` (or None), ``versions`` (mobileseg/torch/torchvision/python), ``date``;
* when written by training: ``config`` (the resolved run config), ``split_stems`` (the stems of every split,
  so evaluation and export score exactly the images the run held out), ``epoch`` (epochs completed), ``step``
  (steps done in the next epoch, for an exact Ctrl-C resume), ``epoch_tally`` (that epoch's train figures so
  far, or None), ``best_fitness``, ``best_epoch``, ``metrics``
  (the last epoch's val metrics), ``history`` (the rows of results.csv), ``inference`` (how the model is
  meant to predict: ``infer``, ``window``, ``overlap``, ``blend``, ``train_scale``, ``tta_scales``; absent = resize);
* ``last.pt`` only: ``optimizer``, ``scheduler``, ``scaler`` (or None); with ``ema`` on, ``model`` is the
  averaged weights, and ``train_model`` (the weights being trained) and ``ema`` (``decay``, ``updates``) are
  what a resume needs besides.

Files without ``format_version`` (version 1, written before it existed) hold the same entries minus
``split_stems`` and load as they are; a newer version than this code knows is refused with a clear message.
"""

from __future__ import annotations

import errno
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mobileseg._version import __version__
from mobileseg.errors import DiskFullError, WeightsError

from .weights import safe_torch_load

FORMAT_VERSION = 2
# The process's umask, read once at import (reading it means setting it): mkstemp creates files as 0600, so a
# checkpoint would be readable by its owner only (a model trained as root in a container could not be served by
# another user); the temp file gets the mode a plain open() would have given it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
REQUIRED = ("model", "model_args")


def versions() -> dict[str, str]:
    """Versions of what made a file: recorded in checkpoints and exported metadata."""
    import torchvision

    return {
        "mobileseg": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def make_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    model_args: Mapping[str, Any],
    names: Sequence[str] | None,
    imgsz: Sequence[int],
    *,
    ignore_index: int = 255,
    palette: Sequence[Sequence[int]] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """Build a checkpoint dict in the current schema (``training`` adds the training entries listed above).

    Tensors are detached and moved to the CPU, so a checkpoint written on a GPU loads anywhere.
    """
    unknown = sorted(set(training) - TRAINING_KEYS)
    if unknown:  # a typo here would silently drop state a resume needs
        raise TypeError(f"unknown checkpoint entries: {unknown}")
    return {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in state_dict.items()},
        "model_args": {**model_args, "encoder_weights": None},
        "names": None if names is None else [str(n) for n in names],
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
        "ignore_index": int(ignore_index),
        "palette": None if not palette else [[int(v) for v in c] for c in palette],
        "versions": versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **training,
    }


TRAINING_KEYS = {
    "config",
    "split_stems",
    "epoch",
    "step",
    "epoch_tally",
    "best_fitness",
    "best_epoch",
    "metrics",
    "history",
    "train_model",
    "ema",
    "inference",
    "optimizer",
    "scheduler",
    "scaler",
}


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    A crash or SIGKILL mid-write leaves the previous file intact, never a truncated one; a full disk raises
    :class:`DiskFullError` saying so (torch reports it as an obscure "unexpected pos" error).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(e, path.parent):
            raise DiskFullError(
                f"no space left on the device to write {path}; the previous {path.name} (if any) is intact. "
                f"Free some space, then resume with: mobileseg train resume={path.parent / 'last.pt'}"
            ) from None
        raise
    return path


def _is_disk_full(error: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT, or torch's zip writer failing ("unexpected pos") while the disk has no room left."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError) and ("unexpected pos" in str(error) or "No space left" in str(error)):
        try:
            return os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize < 64 * 1024 * 1024
        except OSError:
            return True
    return False


def run_checkpoint(folder: str | Path, name: str) -> Path | None:
    """A training run's checkpoint ``name`` (``best.pt``, ``last.pt``) given its run folder or the ``weights/``
    folder inside it; None when neither holds one. For arguments that name a folder where a file was meant.

    Example:
        >>> run_checkpoint("runs/train/no-such-run", "last.pt") is None
        True
    """
    folder = Path(folder)
    return next((c for c in (folder / "weights" / name, folder / name) if c.is_file()), None)


def load_checkpoint(path: str | Path | Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """Load (safely, ``weights_only``) and validate a checkpoint; ``path`` may be an already loaded dict.

    Raises:
        WeightsError: unreadable, not a mobileseg checkpoint, or written by a newer mobileseg.
    """
    if isinstance(path, Mapping):
        ckpt, where = path, source or "checkpoint"
    else:
        ckpt, where = safe_torch_load(path), str(path)
    if not isinstance(ckpt, Mapping) or any(k not in ckpt for k in REQUIRED):
        if isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            what = "a bare state dict"
        elif isinstance(ckpt, Mapping):
            what = f"a dict with keys {sorted(map(str, ckpt))[:8]}"
        else:
            what = f"a {type(ckpt).__name__}"
        raise WeightsError(
            f"{where} is {what}, not a mobileseg checkpoint: expected a dict with 'model' (state dict) and "
            f"'model_args' (constructor arguments), as saved by training or Segmenter.to_checkpoint()"
        )
    version = int(ckpt.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{where} was written by a newer mobileseg (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade mobileseg to use it"
        )
    return dict(ckpt)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (results.csv is rewritten every epoch and must survive a kill)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = [
    "FORMAT_VERSION",
    "atomic_write_text",
    "load_checkpoint",
    "make_checkpoint",
    "save_checkpoint",
    "versions",
]
