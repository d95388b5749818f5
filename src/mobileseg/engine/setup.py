"""Training set-up that does not need a running trainer: optimizer, schedule, precision, resume, sanity checks.

Kept apart from the loop (:mod:`mobileseg.engine.trainer`) so each piece reads and tests on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mobileseg.config import STRIDE, Config, load_config
from mobileseg.data.bands import channel_stats
from mobileseg.engine.pictures import palette_for
from mobileseg.engine.predictor import warn
from mobileseg.engine.runtime import Dist, autocast_dtype, increment_path
from mobileseg.errors import ConfigError, MissingFileError, TrainingError
from mobileseg.models import Segmenter
from mobileseg.models.checkpoint import load_checkpoint, run_checkpoint
from mobileseg.models.model_file import load_model
from mobileseg.models.segmenter import set_normalization
from mobileseg.models.weights import is_pretrained

# The model keys that shape the weights: a run started from a file (``init``) takes them from it.
ARCHITECTURE_KEYS = ("width_mult", "kernel_size", "decoder", "decoder_channels", "decoder_context")


def starts_pretrained(cfg: Config) -> bool:
    """Whether the encoder starts from trained weights (ImageNet, a file, or ``init``): it then learns slower."""
    return is_pretrained(cfg.model.encoder_weights) or bool(cfg.train.init)


def model_from_init(cfg: Config, out_channels: int, names: Sequence[str] | None = None) -> tuple[Segmenter, bool, str]:
    """``(model, whether its head starts afresh, a log line)`` for a new run started from ``train.init``.

    Why: fine-tuning a trained model on new images, or a second stage with another loss or size, is a new run
    (its own schedule, optimizer and folder), not a resume. The architecture is the file's, so ``cfg.model`` takes
    it (keys given that differ are an error); every tensor is copied, except a head whose class count differs,
    which starts as a fresh run's would. The input normalisation travels with the weights. No encoder weights are
    loaded besides the file's, so ``cfg.model.encoder_weights`` becomes ``none`` (what ``args.yaml`` then shows,
    and what a resume of this run builds before loading its checkpoint).

    Args:
        names: the new data's class names. A head of the same class count is copied by position (Ultralytics'
            rule: transfer by shape); when the file's names differ, the log line says so, since the copied head
            then starts from another meaning of each output.

    Raises:
        MissingFileError, WeightsError: the file cannot be read as a mobileseg model.
        ConfigError: a model key, ``encoder_weights`` or the channel count given differs from the file's.
    """
    where = str(cfg.train.init)
    source, _, _ = load_model(where)
    args = source.init_args
    given = cfg.model.model_fields_set
    differ = [
        f"{k}={_shown(getattr(cfg.model, k))} (the file: {_shown(args[k])})"
        for k in ARCHITECTURE_KEYS
        if k in given and _shown(getattr(cfg.model, k)) != _shown(args[k])
    ]
    if args["in_channels"] != cfg.data.channels:
        differ.append(f"channels={cfg.data.channels} (the file: {args['in_channels']})")
    if "encoder_weights" in given and cfg.model.encoder_weights != "none":
        differ.append(f"encoder_weights={cfg.model.encoder_weights} (the file holds the encoder's weights)")
    if differ:
        raise ConfigError(
            f"init: {where} has another architecture than the keys given: {', '.join(differ)}; drop them (a run "
            f"started from a file takes its architecture)"
        )
    for k in ARCHITECTURE_KEYS:
        setattr(cfg.model, k, tuple(args[k]) if k == "decoder_channels" else args[k])
    cfg.model.encoder_weights = "none"
    model = Segmenter.from_config(cfg.model, out_channels, in_channels=cfg.data.channels)
    own, theirs = model.state_dict(), source.state_dict()
    fresh = sorted(k for k in own if k not in theirs or theirs[k].shape != own[k].shape)
    if set(theirs) - set(own) or any(not k.startswith("decoder.head.") for k in fresh):
        raise RuntimeError(f"init: {where} does not fit the model built from its own arguments: {fresh[:4]}")
    model.load_state_dict({k: v for k, v in theirs.items() if k not in fresh}, strict=False)
    note = f"init: weights from {where} ({len(own) - len(fresh)} of {len(own)} tensors)"
    if fresh:
        note += f"; the head starts afresh: the file has {source.num_classes} output(s), this data {out_channels}"
    elif names is not None and source.names and list(source.names) != list(names):
        note += (
            f"; the head is copied by position although the class names differ (the file: "
            f"{', '.join(source.names)}; this data: {', '.join(names)})"
        )
    return model, bool(fresh), note


def _shown(value: Any) -> str:
    """A model key's value as compared and shown: ``decoder_channels`` lists and tuples alike."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """lr factor: linear warm-up from ``floor`` to 1, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return floor + (1 - floor) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; the pretrained encoder learns at ``lr * encoder_lr_mult``; no decay on norms and biases.

    The fused implementation (one kernel over all parameters; the same update rule) where every parameter lives on
    a device that has it: PyTorch's CPU default is a Python loop over the parameters, 17 ms of each 420 ms step of
    the pets model on 2 cores (``benchmarks/train_levers.py --only bf16 bf16+fused``: 1.03x the step).
    """
    t = cfg.train
    enc_lr = t.lr * (t.encoder_lr_mult if starts_pretrained(cfg) else 1.0)
    groups: list[dict[str, Any]] = []
    for part, lr in ((model.encoder, enc_lr), (model.decoder, t.lr)):
        decay = [p for p in part.parameters() if p.ndim > 1]
        no_decay = [p for p in part.parameters() if p.ndim <= 1]
        name = "encoder" if part is model.encoder else "decoder"
        groups.append({"params": decay, "lr": lr, "weight_decay": t.weight_decay, "name": name})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"})
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    return torch.optim.AdamW(groups, lr=t.lr, fused=fused)


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the training forward pass, or None for fp32 (validation always runs fp32).

    The same choice as inference (:func:`~mobileseg.engine.runtime.autocast_dtype`): CUDA bf16 where supported,
    else fp16 (with the grad scaler); CPU bf16 only with bf16 units (AVX512-BF16/AMX), where emulation would be
    slower than fp32.
    """
    return autocast_dtype(device, cfg.train.amp)


def resume_path(resume: str | Path) -> str:
    """The checkpoint ``resume=`` names: a file, or a run folder (or its ``weights/``), meaning its ``last.pt``.

    Resuming always continues from ``last.pt`` (``best.pt`` may be epochs behind), so a folder is unambiguous.
    """
    path = Path(resume).expanduser()
    if path.is_dir():
        last = run_checkpoint(path, "last.pt")
        if last is None:
            raise MissingFileError(f"resume: {path} is a folder without weights/last.pt or last.pt")
        return str(last)
    if not path.is_file():
        raise MissingFileError(f"resume: checkpoint not found: {path}")
    return str(path)


def resume_config(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """The resumed run's saved config; runtime settings but the seed from ``cfg``; an explicit ``epochs`` counts."""
    resume = resume_path(cfg.train.resume)
    ckpt = load_checkpoint(resume)
    if not ckpt.get("config") or "optimizer" not in ckpt:
        raise TrainingError(f"resume: {resume} holds no training state (resume from weights/last.pt)")
    saved = load_config(ckpt["config"])
    # The seed orders the shuffles and augmentations the saved position counts in, so it is the run's, not the
    # command's: a mid-epoch resume under another seed would skip a different set of batches.
    seed_changed = "seed" in cfg.runtime.model_fields_set and cfg.runtime.seed != saved.runtime.seed
    saved.runtime = cfg.runtime.model_copy(update={"name": saved.runtime.name, "seed": saved.runtime.seed})
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
    ignored = changed_keys(cfg, saved) - {"epochs", "resume", "workers"} | ({"seed"} if seed_changed else set())
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


def non_finite_message(value: float, epoch: int, step: int, weights_dir: Path, lr: float) -> str:
    """What a NaN/inf loss stopped, and what is kept: last.pt when an epoch was saved, nothing in the first one
    (the new run folder is then removed). Under DDP ``value`` is this rank's loss, finite where another's was not.
    """
    last = weights_dir / "last.pt"
    kept = f"{last} keeps the last good state" if last.is_file() else "no epoch had been saved yet"
    what = f"became {value}" if not math.isfinite(value) else "became non-finite on another process"
    return (
        f"the loss {what} at epoch {epoch + 1}, step {step + 1}; the run stopped and {kept}. Try a lower lr "
        f"(now {lr}) or grad_clip."
    )


def check_batchnorm_values(imgsz: tuple[int, int], batch: int, n_train: int, world: int) -> None:
    """BatchNorm needs more than one value per channel: at 1/32 scale, a 32x32 input gives one value per image.

    Checked before any folder is made, so a bad setting costs a one-line error and leaves nothing behind.
    """
    per_image = (imgsz[0] // STRIDE) * (imgsz[1] // STRIDE)
    per_rank = -(-n_train // world)  # DistributedSampler gives every rank ceil(n / world) images
    last = per_rank % batch or batch  # the last batch of an epoch may be smaller
    if per_image * min(batch, last) < 2:
        raise ConfigError(
            f"imgsz={imgsz[0]}x{imgsz[1]} with batch={batch} ({'the last batch of ' if last < batch else ''}"
            f"{min(batch, last)} image(s) per process) leaves BatchNorm one value per channel at the encoder's "
            f"1/{STRIDE} scale, which cannot train; use batch >= 2 (and a train split that does not leave a "
            f"single image in the last batch) or imgsz >= 64"
        )


def run_dir(cfg: Config, d: Dist) -> tuple[Path, bool]:
    """``(runs/train/<name>, whether it is new)``, agreed by every DDP rank; a note when it replaces an earlier
    run's weights (``exist_ok=true``)."""
    save_dir = increment_path(Path(cfg.runtime.project) / "train", cfg.runtime.name, cfg.runtime.exist_ok)
    if d.enabled:  # every rank must agree on the folder chosen by rank 0
        box = [str(save_dir)]
        dist.broadcast_object_list(box, src=0)
        save_dir = Path(box[0])
    new = not save_dir.exists()
    old_best = save_dir / "weights" / "best.pt"
    if old_best.is_file() and d.main:
        try:
            old = load_checkpoint(old_best)
            what = f"val IoU {float(old.get('best_fitness', math.nan)):.4f}, {old.get('date', 'undated')}"
        except Exception:  # an unreadable old file is replaced all the same
            what = "unreadable"
        warn(f"exist_ok=true: {save_dir} already holds a best.pt ({what}); this run replaces it")
    return save_dir, new


# ----------------------------------------------------------------------------------------------- set-up


def restore_state(trainer: Any, ckpt: dict[str, Any]) -> None:
    """Put a resumed run's model, optimizer, schedule, scaler, position and history back into ``trainer``."""
    saved_names = list(ckpt.get("names") or [])
    if saved_names and saved_names != list(trainer.spec.names):
        raise TrainingError(
            f"resume: {trainer.cfg.train.resume} was trained on {len(saved_names)} classes ({', '.join(saved_names)}) "
            f"but {trainer.spec.source} now defines {trainer.spec.num_classes} ({', '.join(trainer.spec.names)}); "
            f"a run resumes with the classes it started with. Start a new run for the new classes."
        )
    try:  # with ema on, "model" holds the average and "train_model" the weights being trained
        trainer.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if trainer.ema is not None:
            trainer.ema.load(ckpt["model"], ckpt.get("ema") or {})
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise TrainingError(f"resume: {trainer.cfg.train.resume} does not fit this model: {detail}") from None
    group_names = [g["name"] for g in trainer.optimizer.param_groups]
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    for group, name in zip(trainer.optimizer.param_groups, group_names, strict=True):
        group["name"] = name  # files written before groups were named
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        trainer.scaler.load_state_dict(ckpt["scaler"])
    trainer.start_epoch = ckpt["epoch"]
    trainer.start_step = ckpt.get("step", 0)
    trainer.resumed_tally = ckpt.get("epoch_tally")  # None in files written before it was saved
    trainer.best_fitness = ckpt.get("best_fitness", -math.inf)
    trainer.best_epoch = ckpt.get("best_epoch", 0)
    trainer.history = list(ckpt.get("history", []))


def checkpoint_state(
    trainer: Any, epoch: int, step: int, with_optimizer: bool = True, tally: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The trainer's checkpoint dict (see :mod:`mobileseg.models.checkpoint`); ``epoch`` counts completed epochs,
    ``step`` the steps done in the next one (an exact Ctrl-C position), ``tally`` that epoch's figures so far."""
    last = trainer.history[-1] if trainer.history else {}
    training: dict[str, Any] = {
        "config": trainer.cfg.to_dict(),
        "split_stems": trainer.spec.split_info.get("stems"),
        "epoch": epoch,
        "step": step,
        "epoch_tally": tally,
        "best_fitness": trainer.best_fitness,
        "best_epoch": trainer.best_epoch,
        "metrics": {k: v for k, v in last.items() if k.startswith("val/")},
        "history": trainer.history,
        "inference": trainer.inference.record(),  # how test/predict/export use the model by default
    }
    if with_optimizer:
        training.update(
            optimizer=trainer.optimizer.state_dict(),
            scheduler=trainer.scheduler.state_dict(),
            scaler=trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        )
        if trainer.ema is not None:  # resume needs the raw weights too; predict/export use the average
            training.update(train_model=trainer.model.state_dict(), ema=trainer.ema.state_dict())
    return trainer.eval_model.to_checkpoint(
        trainer.spec.names,
        trainer.cfg.data.crop or trainer.cfg.data.imgsz,  # the input size the network trained at
        ignore_index=trainer.spec.ignore_index,
        palette=palette_for(trainer.spec),
        **training,
    )


__all__ = [
    "ARCHITECTURE_KEYS",
    "amp_dtype",
    "build_optimizer",
    "changed_keys",
    "checkpoint_state",
    "check_batchnorm_values",
    "model_from_init",
    "restore_state",
    "resume_config",
    "run_dir",
    "starts_pretrained",
    "warmup_cosine",
]


def init_from_train_split(model: Segmenter, train: Any, counts: np.ndarray | None, statistics: bool = True) -> None:
    """What a fresh model takes from its train split before the first step.

    * Input bands other than RGB: per-channel mean/std of the train images (ImageNet's do not fit them), stored in
      the checkpoint and every export.
    * A binary refine head: its bias starts at the foreground's log-odds from ``counts`` (background,
      foreground pixels), see :meth:`~mobileseg.models.decoder.RefineDecoder.init_prior`.

    Not called on resume: the checkpoint holds all of it; ``statistics=False`` (a run started from ``init``, whose
    encoder learned on the file's statistics) sets the prior only.
    """
    if model.in_channels != 3 and statistics:
        set_normalization(model, *channel_stats(train))
    prior = getattr(model.decoder, "init_prior", None)
    if model.num_classes == 1 and prior is not None and counts is not None and counts.sum() > 0:
        prior(float(counts[1] / counts.sum()))
