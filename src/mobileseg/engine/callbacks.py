"""Trainer callbacks: what happens around the loop (files, plots, loggers) without touching the loop.

A callback subclasses :class:`Callback` and overrides the events it needs; the trainer calls every event on the
main process only, in the order the callbacks were given. :class:`RunFiles` writes the run folder (args.yaml,
results.csv, plots, model card); loggers (TensorBoard, MLflow) and benchmarks plug in the same way.

Example:
    >>> class PrintIoU(Callback):
    ...     def on_epoch_end(self, trainer, row):
    ...         print(f"epoch {row['epoch']}: val IoU {row['val/iou']:.3f}")
    >>> mobileseg.train(epochs=1, callbacks=[PrintIoU()])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobileseg import viz
from mobileseg.engine.evaluator import format_metrics
from mobileseg.engine.metrics import METRIC_NAMES
from mobileseg.engine.model_card import write_model_card
from mobileseg.engine.pictures import palette_for, prediction_grid
from mobileseg.models.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from mobileseg.engine.trainer import Trainer


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


class Callback:
    """Base class: every event is a no-op. ``trainer`` gives access to ``cfg``, ``save_dir``, ``model``, ``spec``,
    ``history``, ``best_epoch``..."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After set-up, before the first epoch (also when resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After validation and checkpointing; ``row`` is the epoch's results.csv row."""

    def on_plots(self, trainer: Trainer, epoch: int, paths: dict[str, Path]) -> None:
        """After the run's pictures were redrawn (``paths``: name -> PNG)."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the last epoch (or an early stop / interruption), with the final result."""


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

    def on_train_start(self, trainer: Trainer) -> None:
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

    def plot_data(self, trainer: Trainer) -> dict[str, Path]:
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

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in trainer.history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(trainer.save_dir / "results.csv", buf.getvalue())
        epoch, epochs = int(row["epoch"]), trainer.cfg.train.epochs
        if epoch % trainer.cfg.train.plot_every == 0 or epoch == epochs:
            trainer.emit("on_plots", epoch, self.plot(trainer))

    def plot(self, trainer: Trainer) -> dict[str, Path]:
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

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if trainer.history:
            write_model_card(trainer, result)


def summary_lines(trainer: Trainer, result: TrainResult) -> str:
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


def call_all(callbacks: list[Callback], event: str, *args: Any) -> None:
    for callback in callbacks:
        getattr(callback, event)(*args)


__all__ = ["RESULT_COLUMNS", "Callback", "TrainResult", "RunFiles", "call_all", "summary_lines", "write_model_card"]
