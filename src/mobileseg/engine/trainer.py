"""Training: one run folder, exact validation each epoch, atomic checkpoints, resume, early stop, DDP.

Run folder (``runs/train/<name>/``): ``args.yaml`` (resolved config + split), ``results.csv``, ``results.png``,
``val_predictions.png``, ``weights/best.pt``, ``weights/last.pt`` and a model card ``README.md``.

Reproducibility: the sample order of epoch ``e`` comes from ``DistributedSampler(seed=seed)`` with
``set_epoch(e)``, and each sample's augmentation is seeded from ``(seed, epoch, index)``. So the same config gives
the same run on the CPU, a resumed run continues exactly where it stopped, and N processes see the same global
batches as one process does.
"""

from __future__ import annotations

import math
import shutil
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from mobileseg.config import Config, resolve_config
from mobileseg.data import build_transforms, load_dataset, recommended_workers
from mobileseg.data.crops import train_val_datasets
from mobileseg.engine.callbacks import Callback, Events, TrainResult
from mobileseg.engine.ema import WeightEMA
from mobileseg.engine.evaluator import eval_loader, evaluate, format_metrics
from mobileseg.engine.inference_mode import SlideModel, training_settings
from mobileseg.engine.loggers import build_loggers
from mobileseg.engine.loss import build_loss, count_class_pixels
from mobileseg.engine.metrics import EpochTally, logits_to_pred
from mobileseg.engine.predictor import warn
from mobileseg.engine.run_files import RunFiles, start_lines, summary_lines
from mobileseg.engine.runtime import every_rank, prepare, sync_buffers
from mobileseg.engine.setup import (
    amp_dtype,
    build_optimizer,
    check_batchnorm_values,
    checkpoint_state,
    init_from_train_split,
    model_from_init,
    non_finite_message,
    restore_state,
    resume_config,
    run_dir,
    starts_pretrained,
    warmup_cosine,
)
from mobileseg.errors import ConfigError, DataError, NonFiniteLossError
from mobileseg.models import Segmenter
from mobileseg.models.checkpoint import save_checkpoint


class Trainer:
    """Builds everything from a :class:`Config` and runs :meth:`fit`.

    Args:
        cfg: the resolved config. With ``train.resume`` set, the run's own saved config is used instead
            (so the run ends at the same epoch with the same schedule); runtime settings are kept, and an
            explicit ``epochs`` extends (or shortens) the schedule, as the log says.
        callbacks: extra :class:`~mobileseg.engine.callbacks.Callback` objects (loggers...), called after the
            run folder's own :class:`~mobileseg.engine.run_files.RunFiles`.
    """

    def __init__(self, cfg: Config, callbacks: Sequence[Callback] = ()) -> None:
        self.resume_ckpt: dict[str, Any] | None = None
        if cfg.train.resume:
            cfg, self.resume_ckpt = resume_config(cfg)
        self.cfg = cfg
        self.dist, self.device, self.threads = prepare(cfg.runtime)
        self.log = print if (self.dist.main and cfg.runtime.verbose) else (lambda *a, **k: None)
        self.events = Events([RunFiles(), *callbacks])
        self._setup_data()
        self._setup_model()
        self.start_epoch, self.start_step = 0, 0
        self.resumed_tally: dict[str, Any] | None = None  # the interrupted epoch's figures so far
        self.best_fitness, self.best_epoch = -math.inf, 0
        self.history: list[dict[str, float]] = []
        self._new_dir = False
        if self.resume_ckpt is not None:
            restore_state(self, self.resume_ckpt)
            self.save_dir = Path(cfg.train.resume).resolve().parent.parent  # type: ignore[arg-type]
        else:
            self.save_dir, self._new_dir = run_dir(cfg, self.dist)
        self.weights_dir = self.save_dir / "weights"
        self.stop_reason = "completed"
        self._interrupted = False

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.spec = load_dataset(cfg.data)  # runs the data checks: bad data stops here, before any work
        if not self.spec.splits.get("train"):
            raise DataError(f"{self.spec.source}: the train split is empty")
        # No val split (val_fraction: 0, a final fit on every image): no val metrics, best.pt = the final epoch.
        self.validates = bool(self.spec.splits.get("val"))
        if not self.validates and cfg.train.patience:
            raise ConfigError(f"patience={cfg.train.patience} stops on val IoU; {self.spec.source} has no val split")
        imgsz, cache = cfg.data.imgsz, cfg.data.cache
        self.workers = cfg.data.workers if cfg.data.workers is not None else recommended_workers(cache)
        transform = build_transforms(cfg.data, train=True, ignore_index=self.spec.ignore_index)
        self.inference = training_settings(cfg)  # crops: validation slides the way test and predict will
        self.train_base, self.train_ds, self.val_ds = train_val_datasets(
            cfg.data, self.spec, transform if cfg.data.augment else None, cfg.runtime.seed, self.inference.slide
        )
        self.val_batch = 1 if self.inference.slide else None  # native sizes differ
        if cfg.train.batch % self.dist.world_size:
            raise ConfigError(
                f"batch={cfg.train.batch} is the global batch and must divide by the {self.dist.world_size} processes"
            )
        self.batch = cfg.train.batch // self.dist.world_size
        check_batchnorm_values(cfg.data.crop or imgsz, self.batch, len(self.train_ds), self.dist.world_size)
        self.sampler = DistributedSampler(
            self.train_ds, self.dist.world_size, self.dist.rank, shuffle=True, seed=cfg.runtime.seed
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.batch)

    def _setup_model(self) -> None:
        cfg = self.cfg
        out_channels = 1 if self.spec.binary else self.spec.num_classes
        fresh = self.resume_ckpt is None  # a resume's checkpoint holds every weight, statistic and prior
        self.init_note, fresh_head = "", fresh
        if fresh and cfg.train.init:
            model, fresh_head, self.init_note = model_from_init(cfg, out_channels, self.spec.names)
        else:
            model = Segmenter.from_config(cfg.model, out_channels, in_channels=cfg.data.channels)
        model.names, model.imgsz = list(self.spec.names), tuple(cfg.data.crop or cfg.data.imgsz)
        tc = cfg.train
        auto = any(str(v).lower() == "auto" for v in (tc.loss, tc.class_weights, tc.pos_weight))
        # One pass over the train masks, which also fills the cache; labels.png reuses the counts.
        self.class_counts = count_class_pixels(self.train_base) if auto or (fresh_head and self.spec.binary) else None
        if fresh_head:  # started from init, the input statistics are the file's: only a new head needs its prior
            init_from_train_split(model, self.train_base, self.class_counts, statistics=not cfg.train.init)
        if self.dist.enabled and cfg.train.sync_bn:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:  # PyTorch's SyncBatchNorm raises on CPU tensors mid-step; say so up front instead
                self.log("sync_bn=true ignored: PyTorch's SyncBatchNorm runs on CUDA only (BN stays per process)")
        self.model = model.to(self.device)
        # The averaged copy (ema=...) is what validation picks best.pt by and what the checkpoints hold.
        self.ema = WeightEMA(self.model, cfg.train.ema) if cfg.train.ema else None
        self.loss_fn = build_loss(tc, out_channels, self.spec.ignore_index, self.class_counts, names=self.spec.names)
        self.loss_fn = self.loss_fn.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        total = cfg.train.epochs * self.steps_per_epoch
        warmup = int(cfg.train.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total, warmup))
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def decoder_lr(self) -> float:
        """The decoder's current learning rate (the ``lr`` column of results.csv)."""
        return next(g["lr"] for g in self.optimizer.param_groups if g["name"] == "decoder")

    @property
    def precision(self) -> str:
        """What the training forward pass computes in, for the run summary: 'fp32' or e.g. 'bfloat16 autocast'."""
        return "fp32" if self.amp_dtype is None else f"{str(self.amp_dtype).removeprefix('torch.')} autocast"

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and the checkpoints hold: the EMA average when ``ema`` is on."""
        return self.model if self.ema is None else self.ema.module

    def val_model(self, model: nn.Module | None = None) -> nn.Module:
        """``model`` (default: :attr:`eval_model`) as validation runs it: itself, or slid over each val image."""
        net = self.eval_model if model is None else model
        return SlideModel(net, self.inference, self.spec.binary, self.device) if self.inference.slide else net

    def _wrapped(self) -> nn.Module:
        """The module the step runs: DDP around the model when distributed (rebuilt when freezing changes)."""
        if not self.dist.enabled:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids)

    def _train_loader(self, epoch: int, skip_steps: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.train_ds.epoch = epoch
        order = list(self.sampler)
        batches = [order[i : i + self.batch] for i in range(0, len(order), self.batch)][skip_steps:]
        return DataLoader(self.train_ds, batch_sampler=batches, num_workers=self.workers)

    # -------------------------------------------------------------------------------------------- the loop
    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback (main process only: files and loggers are written once)."""
        if self.dist.main:
            self.events.emit(self, event, *args)

    def fit(self) -> TrainResult:
        """Train to the end (or an early stop / Ctrl-C) and return where everything is.

        A run that fails before its first checkpoint leaves no run folder behind (only a fresh folder it made
        itself is removed; a resumed or reused folder is never touched).
        """
        try:
            return self._fit()
        except BaseException:
            if self._new_dir and self.dist.main and not (self.weights_dir / "last.pt").exists():
                shutil.rmtree(self.save_dir, ignore_errors=True)
            raise

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
        for line in self.spec.warning_lines():  # the dataset check's warnings (e.g. "everything is foreground")
            warn(line.removeprefix("WARNING: "))
        if cfg.model.freeze_bn and not starts_pretrained(cfg):
            warn("freeze_bn=true with encoder_weights=none: BatchNorm stays at mean 0, var 1; use freeze_bn=false")
        # From here on, Ctrl-C finishes the current step and saves the exact position. On every rank: a terminal's
        # Ctrl-C (and torchrun's agent) signals every process, and a rank that died mid-step would leave the
        # others blocked in their next collective, never saving.
        # Only the main thread may set a handler: trained from another thread (a notebook's background job, a web
        # app's worker), Ctrl-C is not this thread's to catch, and the run goes on without it.
        catch = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT)
        if catch:
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self.emit("on_train_start")
            self.log(start_lines(self))
            if self.init_note:
                self.log(self.init_note)
            self._loop()
        finally:
            if catch:
                signal.signal(signal.SIGINT, previous)
        if self.stop_reason == "interrupted" and self.dist.main:
            last = self.weights_dir / "last.pt"
            print(f"Saved {last}. Resume with:\n  mobileseg train resume={last}")
        return self._finish()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._interrupted = True
        if self.dist.main:
            print("\nInterrupted: finishing the current step and saving weights/last.pt (Ctrl-C again to abort)")

    def _loop(self) -> None:
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.train.epochs):
            self.emit("on_epoch_start", epoch)
            frozen = cfg.model.freeze_encoder or epoch < cfg.train.freeze_encoder_epochs
            self.model.set_encoder_frozen(frozen)
            net = self._wrapped()
            skip = self.start_step if epoch == self.start_epoch else 0
            train_stats = self._train_epoch(net, epoch, skip)
            if train_stats is None:  # interrupted mid-epoch: last.pt holds the exact position
                self.stop_reason = "interrupted"
                return
            metrics = self._validate()
            row = {"epoch": epoch + 1, **train_stats}
            row.update({f"val/{k}": v for k, v in metrics.items()})
            row["lr"] = self.decoder_lr
            self.history.append(row)
            fitness = metrics.get("iou", math.nan)
            last = cfg.train.best == "last" or not self.validates
            improved = last or (not math.isnan(fitness) and fitness > self.best_fitness)
            if improved:
                self.best_fitness, self.best_epoch = fitness, epoch + 1
            if self.dist.main:
                if improved:
                    save_checkpoint(
                        checkpoint_state(self, epoch + 1, 0, with_optimizer=False), self.weights_dir / "best.pt"
                    )
                save_checkpoint(checkpoint_state(self, epoch + 1, 0), self.weights_dir / "last.pt")
            self.emit("on_epoch_end", row)
            self.log(
                f"epoch {epoch + 1}/{cfg.train.epochs}  train loss {row['train/loss']:.4f}  "
                + (f"val {format_metrics(metrics)}  " if metrics else "")
                + f"{row['img_s']:.1f} img/s  {row['epoch_s']:.0f}s"
                + ("  *best*" if improved else "")
            )
            if cfg.train.patience and epoch + 1 - self.best_epoch >= cfg.train.patience:
                self.stop_reason = f"early stop: no val IoU gain for {cfg.train.patience} epochs"
                self.log(self.stop_reason)
                return
            if self._stop_requested():  # all ranks agree: a signal seen by one rank during validation stops all
                self.stop_reason = "interrupted"
                return

    def _validate(self) -> dict[str, float]:
        """The epoch's val metrics ({} without a val split)."""
        if not self.validates:
            return {}
        sync_buffers(self.eval_model)  # every rank scores its shard with the model rank 0 saves
        loader = eval_loader(self.val_ds, self.val_batch or self.batch, self.workers, self.dist)
        args = (self.spec.num_classes, self.spec.ignore_index, self.device, self.loss_fn)
        return evaluate(self.val_model(), loader, *args, progress=False).metrics

    def _train_epoch(self, net: nn.Module, epoch: int, skip: int) -> dict[str, float] | None:
        from tqdm import tqdm

        cfg = self.cfg
        net.train()
        loader = self._train_loader(epoch, skip)
        # A resumed epoch goes on from the figures saved with the exact position.
        tally = EpochTally(self.spec.num_classes, self.spec.ignore_index, self.resumed_tally if skip else None)
        step = skip
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            total=self.steps_per_epoch,
            initial=skip,
            disable=None if (self.dist.main and cfg.runtime.verbose) else True,  # None: bars only on a terminal
            leave=False,
            dynamic_ncols=True,
        )
        for images, targets in bar:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                logits = net(images)
            logits = logits.float()  # the loss and the train metrics in fp32, whatever the autocast dtype
            loss = self.loss_fn(logits, targets)
            if not every_rank(bool(torch.isfinite(loss).item())):
                raise NonFiniteLossError(non_finite_message(loss.item(), epoch, step, self.weights_dir, cfg.train.lr))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            step += 1
            tally.update(loss.item(), targets, logits_to_pred(logits.detach()))
            img_s = tally.seen * self.dist.world_size / tally.elapsed
            bar.set_postfix(loss=f"{tally.loss_sum / tally.seen:.4f}", img_s=f"{img_s:.1f}")
            if self._stop_requested():
                tally.reduce()
                if self.dist.main:
                    state = checkpoint_state(self, epoch, step, tally=tally.state_dict())
                    save_checkpoint(state, self.weights_dir / "last.pt")
                bar.close()
                return None
        bar.close()
        tally.reduce()
        return tally.compute()

    def _stop_requested(self) -> bool:
        self._interrupted = every_rank(self._interrupted, any_rank=True)
        return self._interrupted

    # ---------------------------------------------------------------------------------------------- outputs
    def _finish(self) -> TrainResult:
        best_row = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        result = TrainResult(
            self.save_dir,
            self.weights_dir / "best.pt",
            self.weights_dir / "last.pt",
            len(self.history),
            self.best_epoch,
            {k.removeprefix("val/"): v for k, v in best_row.items() if k.startswith("val/")},
            self.history,
            self.stop_reason,
            self.precision,
        )
        self.emit("on_train_end", result)
        if self.history:
            self.log(summary_lines(self, result))
        if self.dist.enabled:
            dist.barrier()
        return result


def train(
    cfg: Config | dict[str, Any] | str | None = None, callbacks: Sequence[Callback] = (), **overrides: Any
) -> TrainResult:
    """Train a model; the Python twin of ``mobileseg train``.

    Example:
        >>> result = mobileseg.train(epochs=1)  # the bundled pets sample  # doctest: +SKIP
        >>> result.best  # doctest: +SKIP
        PosixPath('runs/train/exp/weights/best.pt')
    """
    cfg = resolve_config(cfg, overrides)
    loggers = build_loggers(cfg)  # checked (package installed?) before any work
    return Trainer(cfg, [*loggers, *callbacks]).fit()
