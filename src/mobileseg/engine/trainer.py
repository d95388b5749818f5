"""Training: one run folder, exact validation each epoch, atomic checkpoints, resume, early stop, DDP.

Run folder (``runs/train/<name>/``): ``args.yaml`` (resolved config + split), ``results.csv``, ``results.png``,
``val_predictions.png``, ``weights/best.pt``, ``weights/last.pt`` and a model card ``README.md``.

Reproducibility: the sample order of epoch ``e`` comes from ``DistributedSampler(seed=seed)`` with
``set_epoch(e)``, and each sample's augmentation is seeded from ``(seed, epoch, index)``. So the same config gives
the same run on the CPU, a resumed run continues exactly where it stopped, and N processes see the same global
batches as one process does.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mobileseg import viz
from mobileseg.config import Config, load_config, resolve_config
from mobileseg.data import (
    SegmentationDataset,
    build_transforms,
    load_dataset,
    recommended_workers,
)
from mobileseg.engine.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint, versions
from mobileseg.engine.evaluator import eval_loader, evaluate, format_metrics, palette_for, prediction_grid
from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.metrics import METRIC_NAMES, ConfusionMatrix, logits_to_pred
from mobileseg.engine.runtime import cpu_has_native_bf16, increment_path, prepare
from mobileseg.models import Segmenter


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf: the run stops, and the last good checkpoint stays as it was."""


class _SeededAugment(Dataset):
    """Applies the train transform with a seed per (epoch, sample), independent of order, workers and ranks."""

    def __init__(self, base: SegmentationDataset, transform: Any, seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.samples = base.samples

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.base.load(i)
        if self.transform is not None:
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**63)
            image, mask = self.transform(image, mask)
        return image.float().div(255), mask.long()


@dataclass
class TrainResult:
    """What a finished run produced."""

    save_dir: Path
    best: Path
    last: Path
    epochs: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "completed"
    precision: str = "fp32"  # of the training forward pass, e.g. "bfloat16 autocast"


def _warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01):  # type: ignore[no-untyped-def]
    """lr factor: linear warm-up from ``floor`` to 1, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return floor + (1 - floor) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    """Builds everything from a :class:`Config` and runs :meth:`fit`.

    Args:
        cfg: the resolved config. With ``train.resume`` set, the run's own saved config is used instead
            (so the run ends at the same epoch with the same schedule); only runtime settings are kept.
    """

    def __init__(self, cfg: Config) -> None:
        resume = cfg.train.resume
        self.resume_ckpt: dict[str, Any] | None = None
        if resume:
            if not Path(resume).is_file():
                raise FileNotFoundError(f"resume: checkpoint not found: {resume}")
            self.resume_ckpt = load_checkpoint(resume)
            saved = load_config(self.resume_ckpt["config"])
            saved.runtime = cfg.runtime.model_copy(update={"name": saved.runtime.name})
            saved.train.resume = resume
            saved.data.workers = cfg.data.workers
            cfg = saved
        self.cfg = cfg
        self.dist, self.device, self.threads = prepare(cfg.runtime)
        self.log = print if (self.dist.main and cfg.runtime.verbose) else (lambda *a, **k: None)

        self.spec = load_dataset(cfg.data)  # runs the data checks: bad data stops here, before any work
        if not self.spec.splits.get("train"):
            raise ValueError(f"{self.spec.source}: the train split is empty")
        if not self.spec.splits.get("val"):
            raise ValueError(
                f"{self.spec.source}: the val split is empty; add a val list/folder or use the automatic split"
            )
        imgsz = cfg.data.imgsz
        cache = cfg.data.cache
        self.workers = cfg.data.workers if cfg.data.workers is not None else recommended_workers(cache)
        transform = build_transforms(cfg.data, train=True, ignore_index=self.spec.ignore_index)
        train_base = SegmentationDataset(self.spec, "train", imgsz, cache=cache)
        self.train_ds = _SeededAugment(train_base, transform if cfg.data.augment else None, cfg.runtime.seed)
        self.val_ds = SegmentationDataset(self.spec, "val", imgsz, cache=cache)
        if cfg.train.batch % self.dist.world_size:
            raise ValueError(
                f"batch={cfg.train.batch} is the global batch and must divide by the {self.dist.world_size} processes"
            )
        self.batch = cfg.train.batch // self.dist.world_size
        self.sampler = DistributedSampler(
            self.train_ds, self.dist.world_size, self.dist.rank, shuffle=True, seed=cfg.runtime.seed
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.batch)

        out_channels = 1 if self.spec.binary else self.spec.num_classes
        model = Segmenter.from_config(cfg.model, out_channels)
        model.names, model.imgsz = list(self.spec.names), tuple(imgsz)
        if self.dist.enabled and cfg.train.sync_bn:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:  # PyTorch's SyncBatchNorm raises on CPU tensors mid-step; say so up front instead
                self.log("sync_bn=true ignored: PyTorch's SyncBatchNorm runs on CUDA only (BN stays per process)")
        self.model = model.to(self.device)
        self.loss_fn = SegmentationLoss(
            out_channels,
            self.spec.ignore_index,
            cfg.train.pos_weight,
            cfg.train.class_weights,
            cfg.train.dice_weight,
        ).to(self.device)
        self.optimizer = self._build_optimizer()
        total = cfg.train.epochs * self.steps_per_epoch
        warmup = int(cfg.train.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_cosine(total, warmup))
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.start_epoch, self.start_step = 0, 0
        self.best_fitness, self.best_epoch = -math.inf, 0
        self.history: list[dict[str, float]] = []
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
            self.save_dir = Path(resume).resolve().parent.parent  # type: ignore[arg-type]
        else:
            root = Path(cfg.runtime.project) / "train"
            self.save_dir = increment_path(root, cfg.runtime.name, cfg.runtime.exist_ok)
            if self.dist.enabled:  # every rank must agree on the folder chosen by rank 0
                box = [str(self.save_dir)]
                dist.broadcast_object_list(box, src=0)
                self.save_dir = Path(box[0])
        self.weights_dir = self.save_dir / "weights"
        self.stop_reason = "completed"
        self._interrupted = False

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; the pretrained encoder learns at ``lr * encoder_lr_mult``; no decay on norms and biases."""
        cfg = self.cfg.train
        pretrained = str(self.cfg.model.encoder_weights).lower() not in ("none", "")
        enc_lr = cfg.lr * (cfg.encoder_lr_mult if pretrained else 1.0)
        groups: list[dict[str, Any]] = []
        for part, lr in ((self.model.encoder, enc_lr), (self.model.decoder, cfg.lr)):
            decay = [p for p in part.parameters() if p.ndim > 1]
            no_decay = [p for p in part.parameters() if p.ndim <= 1]
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=cfg.lr)

    @property
    def precision(self) -> str:
        """What the training forward pass computes in, for the run summary: 'fp32' or e.g. 'bfloat16 autocast'."""
        return "fp32" if self.amp_dtype is None else f"{str(self.amp_dtype).removeprefix('torch.')} autocast"

    def _amp_dtype(self) -> torch.dtype | None:
        """Autocast dtype of the training forward pass, or None for fp32 (validation always runs fp32).

        CUDA: bf16 where supported, else fp16 (with the grad scaler). CPU: bf16 only on CPUs with bf16 units
        (AVX512-BF16/AMX); elsewhere CPU autocast is slower than fp32.
        """
        if not self.cfg.train.amp:
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = ckpt["epoch"]
        self.start_step = ckpt.get("step", 0)
        self.best_fitness = ckpt.get("best_fitness", -math.inf)
        self.best_epoch = ckpt.get("best_epoch", 0)
        self.history = list(ckpt.get("history", []))

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
    def fit(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            self._write_args()
        self.log(
            f"mobileseg train: {self.spec.source}  {len(self.train_ds)} train / {len(self.val_ds)} val images  "
            f"classes {self.spec.names}  imgsz {cfg.data.imgsz[0]}x{cfg.data.imgsz[1]}\n"
            f"model: {self.model.format_summary(cfg.data.imgsz)}\n"
            f"device {self.device}  threads {self.threads}  workers {self.workers}  processes {self.dist.world_size}"
            f"  batch {cfg.train.batch}  epochs {cfg.train.epochs}  precision {self.precision}  run {self.save_dir}"
        )
        if self.start_epoch or self.start_step:
            self.log(f"resuming from {cfg.train.resume}: epoch {self.start_epoch + 1}, step {self.start_step}")
        previous = signal.getsignal(signal.SIGINT)
        if self.dist.main:
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self._loop()
        finally:
            if self.dist.main:
                signal.signal(signal.SIGINT, previous)
        if self.stop_reason == "interrupted" and self.dist.main:
            last = self.weights_dir / "last.pt"
            print(f"Saved {last}. Resume with:\n  mobileseg train resume={last}")
        return self._finish()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._interrupted = True
        print("\nInterrupted: finishing the current step and saving weights/last.pt (Ctrl-C again to abort)")

    def _loop(self) -> None:
        cfg = self.cfg
        fixed = np.linspace(0, len(self.val_ds) - 1, min(6, len(self.val_ds))).round().astype(int).tolist()
        palette = palette_for(self.spec)
        for epoch in range(self.start_epoch, cfg.train.epochs):
            frozen = cfg.model.freeze_encoder or epoch < cfg.train.freeze_encoder_epochs
            self.model.set_encoder_frozen(frozen)
            net = self._wrapped()
            skip = self.start_step if epoch == self.start_epoch else 0
            train_stats = self._train_epoch(net, epoch, skip)
            if train_stats is None:  # interrupted mid-epoch: last.pt holds the exact position
                self.stop_reason = "interrupted"
                return
            val = evaluate(
                self.model,
                eval_loader(self.val_ds, self.batch, self.workers, self.dist),
                self.spec.num_classes,
                self.spec.ignore_index,
                self.device,
                self.loss_fn,
                progress=False,
            )
            row = {"epoch": epoch + 1, **train_stats}
            row.update({f"val/{k}": v for k, v in val.metrics.items()})
            row["lr"] = self.optimizer.param_groups[2]["lr"]
            self.history.append(row)
            fitness = val.metrics["iou"]
            improved = not math.isnan(fitness) and fitness > self.best_fitness
            if improved:
                self.best_fitness, self.best_epoch = fitness, epoch + 1
            if self.dist.main:
                if improved:
                    save_checkpoint(self._state(epoch + 1, 0, with_optimizer=False), self.weights_dir / "best.pt")
                save_checkpoint(self._state(epoch + 1, 0), self.weights_dir / "last.pt")
                self._write_results()
                if (epoch + 1) % cfg.train.plot_every == 0 or epoch + 1 == cfg.train.epochs:
                    viz.plot_results(self.history, self.save_dir / "results.png")
                    prediction_grid(
                        self.model,
                        self.val_ds,
                        fixed,
                        self.save_dir / "val_predictions.png",
                        palette,
                        self.device,
                    )
            self.log(
                f"epoch {epoch + 1}/{cfg.train.epochs}  train loss {row['train/loss']:.4f}  "
                f"val {format_metrics(val.metrics)}  {row['img_s']:.1f} img/s  {row['epoch_s']:.0f}s"
                + ("  *best*" if improved else "")
            )
            if cfg.train.patience and epoch + 1 - self.best_epoch >= cfg.train.patience:
                self.stop_reason = f"early stop: no val IoU gain for {cfg.train.patience} epochs"
                self.log(self.stop_reason)
                return
            if self._interrupted:
                self.stop_reason = "interrupted"
                return

    def _train_epoch(self, net: nn.Module, epoch: int, skip: int) -> dict[str, float] | None:
        from tqdm import tqdm

        cfg = self.cfg
        net.train()
        loader = self._train_loader(epoch, skip)
        cm = ConfusionMatrix(self.spec.num_classes, self.spec.ignore_index)
        loss_sum, seen, step = 0.0, 0, skip
        start = time.perf_counter()
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
            if not self._all_finite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the run stopped and "
                    f"{self.weights_dir / 'last.pt'} keeps the last good state. Try a lower lr (now "
                    f"{cfg.train.lr}) or grad_clip."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            step += 1
            loss_sum += loss.item() * images.shape[0]
            seen += images.shape[0]
            cm.update(targets, logits_to_pred(logits.detach()))
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * self.dist.world_size / elapsed:.1f}")
            if self._stop_requested():
                if self.dist.main:
                    save_checkpoint(self._state(epoch, step), self.weights_dir / "last.pt")
                bar.close()
                return None
        bar.close()
        seconds = time.perf_counter() - start
        totals = torch.tensor([loss_sum, seen], dtype=torch.float64)
        if self.dist.enabled:
            dist.all_reduce(totals)
        cm.reduce_from_all_processes()
        stats = {"train/loss": (totals[0] / totals[1]).item() if totals[1] else math.nan}
        stats.update({f"train/{k}": v for k, v in cm.compute().items()})
        stats["epoch_s"] = seconds
        stats["img_s"] = totals[1].item() / seconds if seconds else math.nan
        return stats

    def _all_finite(self, loss: torch.Tensor) -> bool:
        ok = torch.tensor([float(torch.isfinite(loss).item())])
        if self.dist.enabled:  # every rank stops together
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def _stop_requested(self) -> bool:
        flag = torch.tensor([float(self._interrupted)])
        if self.dist.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self._interrupted = bool(flag.item())
        return self._interrupted

    # ---------------------------------------------------------------------------------------------- outputs
    def _state(self, epoch: int, step: int, with_optimizer: bool = True) -> dict[str, Any]:
        """Checkpoint dict; ``epoch`` counts completed epochs, ``step`` the steps done in the next one."""
        last = self.history[-1] if self.history else {}
        state: dict[str, Any] = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_args": {**self.model.init_args, "encoder_weights": None},
            "names": list(self.spec.names),
            "imgsz": list(self.cfg.data.imgsz),
            "ignore_index": self.spec.ignore_index,
            "palette": [list(c) for c in self.spec.palette] if self.spec.palette else None,
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "step": step,
            "best_fitness": self.best_fitness,
            "best_epoch": self.best_epoch,
            "metrics": {k: v for k, v in last.items() if k.startswith("val/")},
            "history": self.history,
            "versions": versions(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if with_optimizer:
            state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            )
        return state

    def _write_args(self) -> None:
        import yaml

        doc = self.cfg.to_dict()
        doc["dataset_info"] = {
            "source": self.spec.source,
            "names": list(self.spec.names),
            "ignore_index": self.spec.ignore_index,
            "split": self.spec.split_info,
        }
        atomic_write_text(self.save_dir / "args.yaml", yaml.safe_dump(doc, sort_keys=False))

    def _write_results(self) -> None:
        columns = [
            "epoch",
            "train/loss",
            *(f"train/{m}" for m in METRIC_NAMES),
            "val/loss",
            *(f"val/{m}" for m in METRIC_NAMES),
            "lr",
            "epoch_s",
            "img_s",
        ]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self.save_dir / "results.csv", buf.getvalue())

    def _finish(self) -> TrainResult:
        best, last = self.weights_dir / "best.pt", self.weights_dir / "last.pt"
        best_row = next((r for r in self.history if r["epoch"] == self.best_epoch), {})
        best_metrics = {k.removeprefix("val/"): v for k, v in best_row.items() if k.startswith("val/")}
        if self.dist.main and self.history:
            self._write_card(best_metrics)
            self.log(
                f"\n{len(self.history)} epochs {self.stop_reason} in {sum(r['epoch_s'] for r in self.history):.0f}s."
                f"  Best epoch {self.best_epoch}: {format_metrics(best_metrics)}\n"
                f"Results saved to {self.save_dir}\n"
                f"  weights  {best}  (last: {last.name})\n"
                f"  plots    {self.save_dir / 'results.png'}, {self.save_dir / 'val_predictions.png'}\n"
                f"  metrics  {self.save_dir / 'results.csv'}\n"
                f"Test it:   mobileseg test weights={best}"
            )
        if self.dist.enabled:
            dist.barrier()
        return TrainResult(
            self.save_dir,
            best,
            last,
            len(self.history),
            self.best_epoch,
            best_metrics,
            self.history,
            self.stop_reason,
            self.precision,
        )

    def _write_card(self, best_metrics: dict[str, float]) -> None:
        cfg, s = self.cfg, self.model.summary(self.cfg.data.imgsz)
        size = (self.weights_dir / "best.pt").stat().st_size / 1e6 if (self.weights_dir / "best.pt").exists() else 0
        h, w = cfg.data.imgsz
        lines = [
            f"# mobileseg model: {self.save_dir.name}",
            "",
            "MobileNetV2 encoder + pix2pix decoder (the TensorFlow segmentation tutorial's design), trained with "
            f"mobileseg {versions()['mobileseg']}.",
            "",
            f"- Data: `{self.spec.source}`, {len(self.train_ds)} train / {len(self.val_ds)} val images",
            f"- Classes ({self.spec.num_classes}): {', '.join(self.spec.names)}"
            + (" (binary: one logit, threshold 0.5)" if self.spec.binary else ""),
            f"- Input: RGB {h}x{w}, values in [0, 1] (the model normalises itself)",
            f"- Size: {s['params'] / 1e6:.2f} M parameters, {s['gflops']:.2f} GFLOPs per image, best.pt {size:.1f} MB",
            f"- Encoder weights: {cfg.model.encoder_weights}; epochs run: {len(self.history)} "
            f"({self.stop_reason}), best epoch {self.best_epoch}; training precision {self.precision}",
            "",
            "## Validation metrics (best epoch)",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v:.4f} |" for k, v in best_metrics.items()),
            "",
            "## Use it",
            "",
            "```bash",
            f"mobileseg test weights={self.weights_dir / 'best.pt'}",
            f"mobileseg predict weights={self.weights_dir / 'best.pt'} source=path/to/images",
            f"mobileseg export weights={self.weights_dir / 'best.pt'} format=onnx",
            "```",
            "",
            "```python",
            "from mobileseg import Segmenter",
            f"model = Segmenter.from_checkpoint('{self.weights_dir / 'best.pt'}').eval()",
            "```",
        ]
        atomic_write_text(self.save_dir / "README.md", "\n".join(lines) + "\n")


def train(cfg: Config | dict[str, Any] | str | None = None, **overrides: Any) -> TrainResult:
    """Train a model; the Python twin of ``mobileseg train``.

    Example:
        >>> result = mobileseg.train(epochs=1)  # the bundled pets sample  # doctest: +SKIP
        >>> result.best
        PosixPath('runs/train/exp/weights/best.pt')
    """
    cfg = resolve_config(cfg, overrides)
    return Trainer(cfg).fit()
