"""Training set-up that does not need a running trainer: optimizer, schedule, precision, resume, sanity checks.

Kept apart from the loop (:mod:`mobileseg.engine.trainer`) so each piece reads and tests on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobileseg.config import STRIDE, Config, load_config
from mobileseg.engine.runtime import cpu_has_native_bf16
from mobileseg.errors import ConfigError, MissingFileError, TrainingError
from mobileseg.models.checkpoint import load_checkpoint


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """lr factor: linear warm-up from ``floor`` to 1, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return floor + (1 - floor) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; the pretrained encoder learns at ``lr * encoder_lr_mult``; no decay on norms and biases."""
    pretrained = str(cfg.model.encoder_weights).lower() not in ("none", "")
    t = cfg.train
    enc_lr = t.lr * (t.encoder_lr_mult if pretrained else 1.0)
    groups: list[dict[str, Any]] = []
    for part, lr in ((model.encoder, enc_lr), (model.decoder, t.lr)):
        decay = [p for p in part.parameters() if p.ndim > 1]
        no_decay = [p for p in part.parameters() if p.ndim <= 1]
        name = "encoder" if part is model.encoder else "decoder"
        groups.append({"params": decay, "lr": lr, "weight_decay": t.weight_decay, "name": name})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"})
    return torch.optim.AdamW(groups, lr=t.lr)


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the training forward pass, or None for fp32 (validation always runs fp32).

    CUDA: bf16 where supported, else fp16 (with the grad scaler). CPU: bf16 only on CPUs with bf16 units
    (AVX512-BF16/AMX); elsewhere CPU autocast is slower than fp32.
    """
    if not cfg.train.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def resume_config(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """The resumed run's saved config; runtime settings from ``cfg``; an explicit ``epochs`` is honoured."""
    resume = cfg.train.resume
    if not Path(resume).is_file():
        raise MissingFileError(f"resume: checkpoint not found: {resume}")
    ckpt = load_checkpoint(resume)
    if not ckpt.get("config") or "optimizer" not in ckpt:
        raise TrainingError(f"resume: {resume} holds no training state (resume from weights/last.pt)")
    saved = load_config(ckpt["config"])
    saved.runtime = cfg.runtime.model_copy(update={"name": saved.runtime.name})
    saved.train.resume = resume
    saved.data.workers = cfg.data.workers
    done = int(ckpt.get("epoch", 0))
    if "epochs" in cfg.train.model_fields_set and cfg.train.epochs != saved.train.epochs:
        if cfg.train.epochs <= done:
            raise ConfigError(
                f"resume: epochs={cfg.train.epochs}, but {resume} has already completed {done} epochs; "
                f"give more epochs than that to train longer"
            )
        print(
            f"resume: extending the run from {saved.train.epochs} to {cfg.train.epochs} epochs; the learning "
            f"rate schedule (warm-up + cosine) is stretched to the new length from epoch {done + 1} on"
        )
        saved.train.epochs = cfg.train.epochs
    ignored = changed_keys(cfg, saved) - {"epochs", "resume", "workers"}
    if ignored:
        print(f"resume: the run's saved config is used; ignored: {', '.join(sorted(ignored))}")
    return saved, ckpt


def changed_keys(given: Config, saved: Config) -> set[str]:
    """Keys set explicitly in ``given`` whose value differs from ``saved`` (training sections only)."""
    changed = set()
    for section in ("model", "data", "train"):
        mine, theirs = getattr(given, section), getattr(saved, section)
        changed |= {k for k in mine.model_fields_set if getattr(mine, k) != getattr(theirs, k)}
    return changed


def check_batchnorm_values(imgsz: tuple[int, int], batch: int, n_train: int, world: int) -> None:
    """BatchNorm needs more than one value per channel: at 1/32 scale, a 32x32 input gives one value per image.

    Checked before any folder is made, so a bad setting costs a one-line error and leaves nothing behind.
    """
    per_image = (imgsz[0] // STRIDE) * (imgsz[1] // STRIDE)
    last = (n_train // world) % batch or batch  # the last batch of an epoch may be smaller
    if per_image * min(batch, last) < 2:
        raise ConfigError(
            f"imgsz={imgsz[0]}x{imgsz[1]} with batch={batch} ({'the last batch of ' if last < batch else ''}"
            f"{min(batch, last)} image(s) per process) leaves BatchNorm one value per channel at the encoder's "
            f"1/{STRIDE} scale, which cannot train; use batch >= 2 (and a train split that does not leave a "
            f"single image in the last batch) or imgsz >= 64"
        )


__all__ = ["amp_dtype", "build_optimizer", "changed_keys", "check_batchnorm_values", "resume_config", "warmup_cosine"]
