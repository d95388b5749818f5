"""The run folder a training run writes: ``args.yaml``, ``results.csv``, the pictures, the model card and the
closing summary, as the trainer's first callback (:class:`RunFiles`).

The card's text pieces and the sections later evaluations add are :mod:`mobileseg.engine.model_card`'s; what
needs the finished run (its datasets, loss, best weights) is here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mobileseg import viz
from mobileseg.engine.callbacks import Callback, TrainerState, TrainResult
from mobileseg.engine.evaluator import format_metrics
from mobileseg.engine.metrics import METRIC_NAMES, ConfusionMatrix, logits_to_pred
from mobileseg.engine.model_card import (
    CARD_NAME,
    RUN_PICTURES,
    SHOWN_PICTURES,
    TITLE_PREFIX,
    dataset_label,
    metrics_table,
    per_class_table,
)
from mobileseg.engine.pictures import palette_for, prediction_grid
from mobileseg.models.checkpoint import atomic_write_text, versions
from mobileseg.models.segmenter import Segmenter
from mobileseg.models.weights import describe_encoder_weights

RESULT_COLUMNS = [
    "epoch",
    "train/loss",
    *(f"train/{m}" for m in METRIC_NAMES),
    "val/loss",
    *(f"val/{m}" for m in METRIC_NAMES),
    "lr",
    "epoch_s",
    "img_s",
]


class RunFiles(Callback):
    """The run folder: ``args.yaml``, ``results.csv``, ``results.png``, ``val_predictions.png``, ``train_batch.png``,
    ``labels.png`` and the model card ``README.md`` (:mod:`mobileseg.engine.model_card`)."""

    def on_train_start(self, trainer: TrainerState) -> None:
        import yaml

        doc = trainer.cfg.to_dict()
        # The inference mode the model is meant for (infer, window, overlap, blend; train_scale is in data).
        doc["predict"].update({k: v for k, v in trainer.inference.record().items() if k != "train_scale"})
        doc["dataset_info"] = {
            "source": trainer.spec.source,
            "names": list(trainer.spec.names),
            "ignore_index": trainer.spec.ignore_index,
            "split": trainer.spec.split_info,
        }
        atomic_write_text(trainer.save_dir / "args.yaml", yaml.safe_dump(doc, sort_keys=False))
        if trainer.start_epoch == 0 and trainer.start_step == 0:  # what the model learns from, drawn once
            trainer.emit("on_plots", 0, self.plot_data(trainer))

    def plot_data(self, trainer: TrainerState) -> dict[str, Path]:
        """``train_batch.png`` (augmented inputs with their masks) and ``labels.png`` (class shares per split)."""
        spec, run = trainer.spec, trainer.save_dir.name
        palette = palette_for(spec)
        ds = trainer.train_ds
        ds.epoch = 0
        items = [ds[i] for i in range(min(16, len(ds)))]
        batch = viz.plot_train_batch(
            [im for im, _ in items],
            [m for _, m in items],
            trainer.save_dir / "train_batch.png",
            palette,
            spec.names,
            title=run,
            ignore_index=spec.ignore_index,
        )
        # The dataset check counted every mask already (at native size): labels.png costs no decoding.
        counts = trainer.spec.report.split_class_pixels if trainer.spec.report is not None else {}
        shares = {
            split: {name: c / max(1, sum(per_class.values())) for name, c in per_class.items()}
            for split, per_class in counts.items()
        }
        labels = viz.plot_label_distribution(shares, trainer.save_dir / "labels.png", palette, spec.names, title=run)
        return {"train_batch": batch, "labels": labels}

    def on_epoch_end(self, trainer: TrainerState, row: dict[str, float]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in trainer.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(trainer.save_dir / "results.csv", buf.getvalue())
        epoch, epochs = int(row["epoch"]), trainer.cfg.train.epochs
        if epoch % trainer.cfg.train.plot_every == 0 or epoch == epochs:
            trainer.emit("on_plots", epoch, self.plot(trainer))

    def plot(self, trainer: TrainerState) -> dict[str, Path]:
        run = trainer.save_dir.name
        results = viz.plot_results(
            trainer.history,
            trainer.save_dir / "results.png",
            title=run,
            best_epoch=trainer.best_epoch or None,
            binary=trainer.spec.binary,
        )
        if not trainer.validates:  # a final fit without a val split: no validation pictures
            return {"results": results}
        shown = np.linspace(0, len(trainer.val_ds) - 1, min(6, len(trainer.val_ds))).round().astype(int).tolist()
        grid = prediction_grid(
            trainer.val_model(),  # slid over the whole image when training on crops
            trainer.val_ds,
            shown,
            trainer.save_dir / "val_predictions.png",
            palette_for(trainer.spec),
            trainer.device,
            title=f"{run}: validation, epoch {len(trainer.history)}",
        )
        return {"results": results, "val_predictions": grid}

    def on_train_end(self, trainer: TrainerState, result: TrainResult) -> None:
        if trainer.history:
            write_model_card(trainer, result)


def start_lines(trainer: TrainerState) -> str:
    """The opening lines of a run: data, model, machine, precision, loss, and how it starts (resume, no val)."""
    cfg = trainer.cfg
    (h, w), crop = cfg.data.imgsz, cfg.data.crop
    lines = [
        f"mobileseg train: {trainer.spec.source}  {len(trainer.train_ds)} train / {len(trainer.val_ds)} val images  "
        f"classes {trainer.spec.names}  imgsz {h}x{w}  {'crops ' + 'x'.join(map(str, crop)) + ', ' if crop else ''}"
        f"inference: {trainer.inference.describe()}",
        f"model: {trainer.model.format_summary(cfg.data.imgsz)}",
        f"device {trainer.device}  threads {trainer.threads}  workers {trainer.workers}  "
        f"processes {trainer.dist.world_size}  batch {cfg.train.batch}  epochs {cfg.train.epochs}  "
        f"precision {trainer.precision}  run {trainer.save_dir}",
        f"loss: {trainer.loss_fn.describe()}",
    ]
    if not trainer.validates:
        lines.append("no val split: every epoch trains on all train images and best.pt holds the final epoch")
    if trainer.start_epoch or trainer.start_step:
        lines.append(f"resuming from {cfg.train.resume}: epoch {trainer.start_epoch + 1}, step {trainer.start_step}")
    return "\n".join(lines)


def summary_lines(trainer: TrainerState, result: TrainResult) -> str:
    """The closing lines of a run: how it ended, the best epoch, and where everything is."""
    seconds = sum(r["epoch_s"] for r in trainer.history)
    plots = ["results.png", *(["val_predictions.png"] if trainer.validates else [])]
    return (
        f"\n{len(trainer.history)} epochs {result.stopped} in {seconds:.0f}s."
        f"  Best epoch {result.best_epoch}"
        + (
            " (no val split: the final epoch)"
            if not trainer.validates
            else " (best=last: the final epoch)"
            if trainer.cfg.train.best == "last"
            else ""
        )
        + (f": {format_metrics(result.best_metrics)}" if result.best_metrics else "")
        + "\n"
        f"Results saved to {trainer.save_dir}\n"
        f"  weights  {result.best}  (last: {result.last.name})\n"
        f"  plots    {', '.join(str(trainer.save_dir / p) for p in plots)}\n"
        f"  metrics  {trainer.save_dir / 'results.csv'}\n"
        f"Test it:   mobileseg test weights={result.best}"
    )


@torch.inference_mode()
def best_val_per_class(trainer: TrainerState, best: Path) -> dict[str, list[float]] | None:
    """Per-class validation figures of the best weights: one pass of ``best.pt`` over the val split.

    Why re-evaluate: the trainer keeps only the headline row of each epoch, and the model in memory holds the
    *last* epoch's weights. Evaluating ``best.pt`` once costs one validation pass and also covers resumed runs whose
    best epoch came before the resume. It runs in this process alone (the card is written by the main process
    only), so it does no DDP reduction. Multi-class only (binary models report the foreground class already).
    """
    if trainer.spec.binary or not best.is_file() or not trainer.validates:
        return None
    model = trainer.val_model(Segmenter.from_checkpoint(best).to(trainer.device).eval())
    cm = ConfusionMatrix(trainer.spec.num_classes, trainer.spec.ignore_index)
    batch = trainer.val_batch or trainer.batch
    for images, targets in DataLoader(trainer.val_ds, batch_size=batch, num_workers=trainer.workers):
        cm.update(targets, logits_to_pred(model(images.to(trainer.device))).cpu())
    return cm.per_class()


def write_model_card(trainer: TrainerState, result: TrainResult) -> Path:
    """Write the run's ``README.md``: the model, its data, validation metrics (per class too), pictures, usage.

    Sections added by earlier ``mobileseg test`` runs are dropped: this run's weights replace theirs.

    Args:
        trainer: the finished trainer (``cfg``, ``spec``, ``model``, ``save_dir``, ``loss_fn``...).
        result: what :meth:`~mobileseg.engine.trainer.Trainer.fit` returns.

    Example:
        >>> write_model_card(trainer, result).name  # doctest: +SKIP
        'README.md'
    """
    cfg, spec, run = trainer.cfg, trainer.spec, trainer.save_dir
    size_hw = cfg.data.crop or cfg.data.imgsz  # what the network eats: the crop when training on crops
    s = trainer.model.summary(size_hw)
    best = result.best
    rel_best = best.relative_to(run).as_posix() if best.is_relative_to(run) else best.name
    size = best.stat().st_size / 1e6 if best.exists() else 0
    h, w = size_hw
    lines = [
        f"{TITLE_PREFIX}{run.name}",
        "",
        "MobileNetV2 encoder + pix2pix decoder (the TensorFlow segmentation tutorial's design), trained with "
        f"mobileseg {versions()['mobileseg']}.",
        "",
        f"- Data: {dataset_label(spec.source)}, {len(trainer.train_ds)} train / {len(trainer.val_ds)} val images",
        f"- Classes ({spec.num_classes}): {', '.join(spec.names)}"
        + (" (binary: one logit, threshold 0.5)" if spec.binary else ""),
        f"- Input: RGB {h}x{w}, values in [0, 1] (the model normalises itself)",
        f"- Inference: {trainer.inference.describe()} (`infer`, `window`, `overlap`, `train_scale`, `tta_scales` "
        "recorded in the checkpoint: test and predict use them by default)",
        f"- Size: {s['params'] / 1e6:.2f} M parameters, {s['gflops']:.2f} GFLOPs per image, best.pt {size:.1f} MB",
        f"- Started from: `{cfg.train.init}` (`init`: every weight but a head for other classes)"
        if cfg.train.init
        else f"- Encoder weights: {describe_encoder_weights(cfg.model.encoder_weights)}",
        f"- Training: {result.epochs} epochs ({result.stopped}), best epoch {result.best_epoch}"
        + (
            " (no val split: best.pt holds the final epoch)"
            if not trainer.validates
            else " (`best=last`: best.pt holds the final epoch, not the highest val IoU)"
            if cfg.train.best == "last"
            else ""
        )
        + "; "
        f"training precision {result.precision}"
        + (f"; weights: average over the steps (EMA, decay {cfg.train.ema})" if cfg.train.ema else ""),
        f"- Loss: {trainer.loss_fn.describe()}",
        "",
        "## Validation metrics (best epoch)",
        "",
        *(metrics_table(result.best_metrics) if trainer.validates else ["None: trained without a val split."]),
    ]
    per_class = best_val_per_class(trainer, best)
    if per_class is not None:
        lines += ["", f"Per class ({rel_best} on the val split):", "", *per_class_table(spec.names, per_class)]
    pictures = [(name, what) for name, what in RUN_PICTURES if (run / name).is_file()]
    if pictures:
        lines += ["", "## Pictures", "", *(f"- [{name}]({name}): {what}" for name, what in pictures)]
        lines += [f"\n![{what}]({name})" for name, what in pictures if name in SHOWN_PICTURES]
    lines += [
        "",
        "## Use it",
        "",
        "From the run folder (the folder of this file):",
        "",
        "```bash",
        f"mobileseg test weights={rel_best}",
        f"mobileseg predict weights={rel_best} source=path/to/images",
        f"mobileseg export weights={rel_best} format=onnx",
        "```",
        "",
        "```python",
        "from mobileseg import Segmenter",
        f"model = Segmenter.from_checkpoint('{rel_best}').eval()",
        "```",
    ]
    path = run / CARD_NAME
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


__all__ = ["RESULT_COLUMNS", "RunFiles", "best_val_per_class", "start_lines", "summary_lines", "write_model_card"]
