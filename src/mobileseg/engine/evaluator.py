"""Evaluation of a model on a split: exact metrics over all pixels, per-image scores, and the report files."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from mobileseg import viz
from mobileseg.config import Config, load_config, resolve_config
from mobileseg.data import DatasetSpec, SegmentationDataset, load_dataset
from mobileseg.engine.checkpoint import load_checkpoint
from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.metrics import ConfusionMatrix, image_iou, logits_to_pred
from mobileseg.engine.runtime import Dist, increment_path, prepare
from mobileseg.models import Segmenter


@dataclass
class EvalResult:
    """Metrics of one split: headline figures, per-class values, the confusion matrix, optional per-image rows."""

    metrics: dict[str, float]
    per_class: dict[str, list[float]]
    confusion: np.ndarray
    per_image: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class ShardSampler(Sampler[int]):
    """Rank r takes samples r, r+W, r+2W...: every sample exactly once across ranks, no padding duplicates.

    (``DistributedSampler`` pads the split so ranks have equal lengths, which would count some images twice.)
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(dataset: SegmentationDataset, batch: int, workers: int, d: Dist | None = None) -> DataLoader:
    sampler = ShardSampler(len(dataset), d.rank, d.world_size) if d and d.enabled else None
    return DataLoader(dataset, batch_size=batch, shuffle=False, sampler=sampler, num_workers=workers)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int = 255,
    device: torch.device | str = "cpu",
    loss_fn: SegmentationLoss | None = None,
    threshold: float = 0.5,
    per_image: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Run ``model`` over ``loader`` and return exact split metrics (reduced over DDP processes).

    Args:
        num_classes: classes of the metric (2 for a binary model).
        per_image: also return one row per image (IoU, accuracy) in the loader's order; single process only.
    """
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    loss_sum = torch.zeros(2, dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    samples = getattr(loader.dataset, "samples", None)
    index = 0
    for images, targets in tqdm(
        loader, desc="  eval", leave=False, disable=None if progress else True
    ):  # None: bars only on a terminal
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        if loss_fn is not None:
            loss_sum[0] += loss_fn(logits, targets).item() * images.shape[0]
            loss_sum[1] += images.shape[0]
        preds = logits_to_pred(logits, threshold)
        cm.update(targets, preds)
        if per_image:
            for t, p in zip(targets, preds, strict=True):
                valid = t != ignore_index
                rows.append(
                    {
                        "stem": samples[index].stem if samples else str(index),
                        "iou": image_iou(t, p, num_classes, ignore_index),
                        "accuracy": ((t == p) & valid).sum().item() / max(1, valid.sum().item()),
                        "foreground_true": ((t > 0) & valid).float().mean().item(),
                        "foreground_pred": ((p > 0) & valid).float().mean().item(),
                    }
                )
                index += 1
    cm.reduce_from_all_processes()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(loss_sum)
    metrics = cm.compute()
    if loss_fn is not None:
        metrics["loss"] = (loss_sum[0] / loss_sum[1]).item() if loss_sum[1] else math.nan
    model.train(was_training)
    return EvalResult(metrics, cm.per_class(), cm.mat.numpy(), rows, time.perf_counter() - start)


def prediction_grid(
    model: Segmenter,
    dataset: SegmentationDataset,
    indices: list[int],
    path: Path,
    palette: list[tuple[int, int, int]],
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    titles: list[str] | None = None,
) -> Path:
    """Predict the given samples (no augmentation) and draw image | truth | prediction | overlay."""
    images, targets, preds = [], [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in indices:
            image, mask = dataset.load(i)
            logits = model(image.unsqueeze(0).float().div(255).to(device))
            preds.append(logits_to_pred(logits, threshold)[0].cpu().numpy().astype(np.uint8))
            images.append(image.permute(1, 2, 0).numpy())
            targets.append(mask.numpy())
    model.train(was_training)
    names = titles or [dataset.samples[i].stem for i in indices]
    return viz.plot_prediction_grid(images, targets, preds, path, palette, names, dataset_ignore(dataset))


def dataset_ignore(dataset: SegmentationDataset) -> int:
    return dataset.spec.ignore_index if hasattr(dataset, "spec") else 255


def palette_for(spec: DatasetSpec) -> list[tuple[int, int, int]]:
    return [tuple(c) for c in spec.palette] if spec.palette else viz.default_palette(spec.num_classes)


def format_table(names: list[str], per_class: dict[str, list[float]]) -> str:
    """Per-class table: IoU, Dice, precision, recall, pixel support."""
    head = f"{'class':<14}{'IoU':>8}{'Dice':>8}{'Prec':>8}{'Recall':>8}{'pixels':>12}"
    lines = [head, "-" * len(head)]
    for i, name in enumerate(names):
        vals = [per_class[k][i] for k in ("iou", "dice", "precision", "recall")]
        cells = "".join(f"{v:>8.3f}" if not math.isnan(v) else f"{'-':>8}" for v in vals)
        lines.append(f"{name:<14}{cells}{per_class['support'][i]:>12,}")
    return "\n".join(lines)


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def evaluate_checkpoint(
    cfg: Config | dict[str, Any] | None = None, split: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Evaluate ``weights`` on a split and write the report folder (``runs/<split>/<name>/``).

    The dataset defaults to the one the checkpoint was trained on (its path, preset and split seed), so
    ``mobileseg test weights=runs/train/exp/weights/best.pt`` needs nothing else.

    Writes ``metrics.json``, ``per_class.csv`` (multi-class), ``per_image.csv``, ``confusion_matrix.png``,
    ``predictions.png`` and ``worst.png`` (the lowest-IoU images). Returns the metrics dict with the paths.
    """
    cfg = resolve_config(cfg, overrides)
    split = split or cfg.runtime.split
    if not cfg.runtime.weights:
        raise ValueError("no model given: pass weights=<path to best.pt>")
    d, device, _ = prepare(cfg.runtime)
    ckpt = load_checkpoint(cfg.runtime.weights)
    model = Segmenter.from_checkpoint(ckpt, source=str(cfg.runtime.weights)).to(device)
    ckpt_cfg = ckpt.get("config") or {}
    data_cfg = cfg.data
    if data_cfg.dataset is None and ckpt_cfg.get("data"):
        # The dataset the model was trained on, split the same way, at the model's own size.
        trained = load_config({"data": ckpt_cfg["data"]}).data
        data_cfg = trained.model_copy(update={"cache": cfg.data.cache})
    data_cfg = data_cfg.model_copy(update={"imgsz": tuple(model.imgsz)})
    spec = load_dataset(data_cfg)
    if split not in spec.splits or not spec.splits[split]:
        raise ValueError(f"{spec.source}: split '{split}' is empty or missing (have: {', '.join(spec.splits)})")
    model_classes = 2 if model.binary else model.num_classes
    if model_classes != spec.num_classes:
        raise ValueError(f"the model predicts {model_classes} classes but {spec.source} defines {spec.num_classes}")
    dataset = SegmentationDataset(spec, split, data_cfg.imgsz, cache=data_cfg.cache)
    workers = data_cfg.workers if data_cfg.workers is not None else 0
    loader = eval_loader(dataset, cfg.train.batch, workers, d)
    loss_fn = SegmentationLoss(model.num_classes, spec.ignore_index).to(device)
    result = evaluate(
        model,
        loader,
        spec.num_classes,
        spec.ignore_index,
        device,
        loss_fn,
        threshold=cfg.predict.conf,
        per_image=not d.enabled,
        progress=cfg.runtime.verbose and d.main,
    )
    out: dict[str, Any] = {"split": split, "images": len(dataset), **result.metrics}
    if not d.main:
        return out
    save_dir = increment_path(Path(cfg.runtime.project) / split, cfg.runtime.name, cfg.runtime.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    names = spec.names
    report = {
        "weights": str(cfg.runtime.weights),
        "dataset": spec.source,
        "split": split,
        "images": len(dataset),
        "imgsz": list(data_cfg.imgsz),
        "metrics": result.metrics,
        "per_class": {n: {k: v[i] for k, v in result.per_class.items()} for i, n in enumerate(names)},
        "seconds": result.seconds,
    }
    (save_dir / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=True))
    if not spec.binary:
        with open(save_dir / "per_class.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "iou", "dice", "precision", "recall", "pixels"])
            for i, n in enumerate(names):
                w.writerow([n, *(result.per_class[k][i] for k in ("iou", "dice", "precision", "recall", "support"))])
    rows = result.per_image
    with open(save_dir / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["stem"])
        w.writeheader()
        w.writerows(rows)
    viz.plot_confusion_matrix(result.confusion, names, save_dir / "confusion_matrix.png")
    palette = palette_for(spec)
    n_show = min(8, len(dataset))
    spread = np.linspace(0, len(dataset) - 1, n_show).round().astype(int).tolist()
    prediction_grid(model, dataset, spread, save_dir / "predictions.png", palette, device, cfg.predict.conf)
    worst = sorted(range(len(rows)), key=lambda i: rows[i]["iou"])[:n_show]
    prediction_grid(
        model,
        dataset,
        worst,
        save_dir / "worst.png",
        palette,
        device,
        cfg.predict.conf,
        titles=[f"{rows[i]['stem']}  IoU {rows[i]['iou']:.2f}" for i in worst],
    )
    if cfg.runtime.verbose:
        print(f"{split}: {len(dataset)} images  {format_metrics(result.metrics)}")
        if not spec.binary:
            print(format_table(names, result.per_class))
        print(f"Results saved to {save_dir}")
    out["save_dir"] = str(save_dir)
    return out
