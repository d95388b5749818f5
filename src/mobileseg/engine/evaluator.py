"""Evaluation of a model on a split: exact metrics over all pixels, per-image scores, and the report files.

The model is any callable from images to logits: a ``Segmenter`` during training and for ``.pt`` files, or a
backend of :mod:`mobileseg.deploy.runtimes` for exported files, so a checkpoint, its ONNX export and its int8
export are all scored by this one loop.
"""

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
from torch.utils.data import DataLoader, Sampler

from mobileseg import viz
from mobileseg.config import Config
from mobileseg.data import DatasetSpec, SegmentationDataset
from mobileseg.data.crops import NativeDataset
from mobileseg.engine.inference_mode import InferenceSettings, ResizeTTAModel, SlideModel, resolve_settings
from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.metrics import ConfusionMatrix, image_iou, logits_to_pred
from mobileseg.engine.model_card import update_model_card
from mobileseg.engine.pictures import Model, palette_for, prediction_grid
from mobileseg.engine.runtime import Dist, all_reduce, increment_path
from mobileseg.errors import ConfigError, DataError
from mobileseg.models.model_file import ModelInfo, load_trained_dataset, trained_data


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
    model: Model,
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

    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
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
        logits = model(images.to(device))
        targets = targets.to(logits.device)  # backends of exported files answer on the CPU
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
    loss_sum = all_reduce(loss_sum)
    metrics = cm.compute()
    if loss_fn is not None:
        metrics["loss"] = (loss_sum[0] / loss_sum[1]).item() if loss_sum[1] else math.nan
    if isinstance(model, torch.nn.Module):
        model.train(was_training)
    return EvalResult(metrics, cm.per_class(), cm.mat.numpy(), rows, time.perf_counter() - start)


def model_precision(model: Model) -> str | None:
    """The precision a model's figures come from (``bf16``/``fp16``/``fp32``, a backend's ``precision``; a bare
    module runs fp32), or None for exported files, which run as they were exported (fp32 or int8)."""
    net = getattr(model, "net", model)  # SlideModel wraps the backend
    if hasattr(net, "precision"):
        return str(net.precision)
    return "fp32" if isinstance(net, torch.nn.Module) else None


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


def evaluate_split(
    model: Model,
    spec: DatasetSpec,
    split: str,
    imgsz: tuple[int, int],
    *,
    batch: int = 8,
    conf: float = 0.5,
    workers: int = 0,
    cache: str = "none",
    device: torch.device | str = "cpu",
    loss_fn: SegmentationLoss | None = None,
    d: Dist | None = None,
    progress: bool = False,
    settings: InferenceSettings | None = None,
) -> EvalResult:
    """Exact metrics of ``model`` on ``split`` of ``spec`` at ``imgsz`` (one confusion matrix over all pixels).

    With slide ``settings`` (:func:`slide_setup`) the metrics are computed at each image's own size instead.

    Raises:
        DataError: the split is empty or missing.
    """
    if not spec.splits.get(split):
        have = ", ".join(name for name, samples in spec.splits.items() if samples) or "none"
        raise DataError(f"{spec.source}: split '{split}' is empty or missing (have: {have})")
    dataset, model, batch = slide_setup(model, spec, split, imgsz, batch, settings, device, cache)
    loader = eval_loader(dataset, batch, workers, d)
    per_image = not (d and d.world_size > 1)
    return evaluate(model, loader, spec.num_classes, spec.ignore_index, device, loss_fn, conf, per_image, progress)


def slide_setup(
    model: Model,
    spec: DatasetSpec,
    split: str,
    imgsz: tuple[int, int],
    batch: int,
    settings: InferenceSettings | None,
    device: torch.device | str = "cpu",
    cache: str = "none",
) -> tuple[Any, Model, int]:
    """(dataset, model, batch) of an evaluation: the split at ``imgsz`` as it always was, or, in slide mode, at
    each image's own size (:class:`~mobileseg.data.crops.NativeDataset`, batch 1) with the model wrapped in a
    :class:`~mobileseg.engine.inference_mode.SlideModel` (windows at ``train_scale``, TTA); resize mode with
    ``tta`` wraps it in a :class:`~mobileseg.engine.inference_mode.ResizeTTAModel`."""
    if settings is None or not settings.slide:
        if settings is not None and settings.tta != "none":
            model = ResizeTTAModel(model, settings, binary=spec.binary)
        return SegmentationDataset(spec, split, imgsz, cache=cache), model, batch
    net = SlideModel(model, settings, binary=spec.binary, device=device)
    return NativeDataset(spec, split, settings.window or imgsz), net, 1


def report_folder(split: str) -> str:
    """The folder under ``project`` for a split's report: the split's name (``val``, ``test``), except ``train``,
    whose name belongs to training runs; its report goes with the ``val`` command's."""
    return "val" if split == "train" else split


def evaluate_model(
    cfg: Config, model: Model, info: ModelInfo, ckpt: dict[str, Any], split: str, d: Dist, device: torch.device
) -> dict[str, Any]:
    """Evaluate a loaded model on a split of its own dataset and write the report folder (``runs/<split>/<name>/``;
    ``runs/val/<name>/`` for the train split, see :func:`report_folder`).

    The dataset is the one the model was trained on, split the same way (the recorded stems when the checkpoint
    has them): :func:`mobileseg.models.model_file.trained_data`; ``data=`` only relocates it. Exported files hold
    no dataset, so they need ``data=``.

    Writes ``metrics.json``, ``per_class.csv`` (multi-class), ``per_image.csv``, ``confusion_matrix.png``,
    ``predictions.png`` and ``worst.png`` (the lowest-IoU images), and adds the figures to the model card of the
    run that made the weights (:func:`~mobileseg.engine.model_card.update_model_card`). Returns the metrics dict
    with the paths.
    """
    trained = trained_data(ckpt, cfg, info.imgsz)
    if trained is None:
        raise ConfigError(f"{cfg.runtime.weights} names no dataset: pass data=<dataset YAML, folder or preset>")
    spec = load_trained_dataset(trained)
    if trained.stems is not None and not trained.stems.get(split) and not spec.splits.get(split):
        raise DataError(
            f"{cfg.runtime.weights} was trained with no {split} images in its recorded split, and val/test keep "
            f"that split (so no image the model trained on is scored): there is no {split} split to evaluate"
        )
    if info.num_classes != spec.num_classes:
        raise DataError(f"the model predicts {info.num_classes} classes but {spec.source} defines {spec.num_classes}")
    settings = resolve_settings(cfg, info)
    workers = cfg.data.workers if cfg.data.workers is not None else 0
    result = evaluate_split(
        model,
        spec,
        split,
        info.imgsz,
        batch=cfg.train.batch,
        conf=cfg.predict.conf,
        workers=workers,
        cache=cfg.data.cache,
        device=device,
        loss_fn=SegmentationLoss(info.out_channels, spec.ignore_index).to(device),
        d=d,
        progress=cfg.runtime.verbose and d.main,
        settings=settings,
    )
    out: dict[str, Any] = {"split": split, "images": len(spec.splits[split]), **result.metrics}
    if not d.main:
        return out
    save_dir = increment_path(Path(cfg.runtime.project) / report_folder(split), cfg.runtime.name, cfg.runtime.exist_ok)
    dataset, shown_model, _ = slide_setup(model, spec, split, info.imgsz, 1, settings, device, cfg.data.cache)
    write_report(save_dir, result, spec, dataset, shown_model, cfg, device, settings)
    card = update_model_card(cfg.runtime.weights, save_dir, result.metrics, result.per_class, spec, len(dataset), split)
    if cfg.runtime.verbose:
        precision = model_precision(model) or "as exported"
        print(f"{split}: {len(dataset)} images ({settings.describe()}, {precision})  {format_metrics(result.metrics)}")
        if not spec.binary:
            print(format_table(spec.names, result.per_class))
        print(f"Results saved to {save_dir}" + (f"; model card updated: {card}" if card else ""))
    out["save_dir"] = str(save_dir)
    return out


def write_report(
    save_dir: Path,
    result: EvalResult,
    spec: DatasetSpec,
    dataset: SegmentationDataset,
    model: Model,
    cfg: Config,
    device: torch.device,
    settings: InferenceSettings | None = None,
) -> None:
    """metrics.json, per_class.csv, per_image.csv and the pictures of one evaluation."""
    save_dir.mkdir(parents=True, exist_ok=True)
    names = spec.names
    report = {
        "weights": str(cfg.runtime.weights),
        "dataset": spec.source,
        "split": dataset.split,
        "images": len(dataset),
        "imgsz": list(dataset.imgsz),
        "inference": {**settings.record(), "tta": settings.tta} if settings else None,
        "precision": model_precision(model),
        "metrics": result.metrics,
        "per_class": {n: {k: v[i] for k, v in result.per_class.items()} for i, n in enumerate(names)},
        "stems": [s.stem for s in dataset.samples],
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
    run = f"{save_dir.name} ({dataset.split}, {Path(str(cfg.runtime.weights)).name})"
    viz.plot_confusion_matrix(result.confusion, names, save_dir / "confusion_matrix.png", title=run)
    palette = palette_for(spec)
    conf = cfg.predict.conf
    n_show = min(8, len(dataset))
    spread = np.linspace(0, len(dataset) - 1, n_show).round().astype(int).tolist()
    ious = [float(r["iou"]) for r in rows]
    shown_ious = [ious[i] for i in spread] if rows else None
    prediction_grid(
        model, dataset, spread, save_dir / "predictions.png", palette, device, conf, title=run, ious=shown_ious
    )
    if rows:
        worst, note = viz.pick_worst(ious, n_show, shown=spread)
        grid = save_dir / "worst.png"
        prediction_grid(
            model,
            dataset,
            worst,
            grid,
            palette,
            device,
            conf,
            title=f"{run}: worst",
            note=note,
            ious=[ious[i] for i in worst],
        )
