"""Trainer callbacks: what happens around the loop (files, plots, loggers) without touching the loop.

A callback subclasses :class:`Callback` and overrides the events it needs; the trainer calls every event on the
main process only, in the order the callbacks were given, passing itself as ``trainer``: what a callback may
read of it is :class:`TrainerState`. The run folder's own callback
(:class:`~mobileseg.engine.run_files.RunFiles`), the loggers (TensorBoard, MLflow) and benchmarks plug in the
same way. This module is the contract alone, below the trainer, so callbacks never import the loop.

Example:
    >>> class PrintIoU(Callback):
    ...     def on_epoch_end(self, trainer, row):
    ...         print(f"epoch {row['epoch']}: val IoU {row['val/iou']:.3f}")
    >>> mobileseg.train(epochs=1, callbacks=[PrintIoU()])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from mobileseg.config import Config
    from mobileseg.data import DatasetSpec
    from mobileseg.engine.inference_mode import InferenceSettings
    from mobileseg.engine.loss import SegmentationLoss
    from mobileseg.engine.runtime import Dist
    from mobileseg.models import Segmenter


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


@runtime_checkable
class TrainerState(Protocol):
    """What a callback may read of the trainer that calls it (:class:`~mobileseg.engine.trainer.Trainer` is one).

    Read-only by convention: a callback that changes these changes the run.
    """

    cfg: Config  # the resolved config (a resumed run's own)
    spec: DatasetSpec  # the dataset: names, binary, ignore_index, splits, the data check's report
    save_dir: Path  # the run folder
    model: Segmenter  # the network being trained (its last step's weights)
    device: torch.device
    dist: Dist  # rank and world size; events reach the main process only
    history: list[dict[str, float]]  # results.csv rows so far
    best_epoch: int  # 1-based; 0 before the first validation
    start_epoch: int  # where this process started (0, or a resume's epoch)
    start_step: int  # the step within it (a resume mid-epoch)
    validates: bool  # False for a final fit without a val split
    train_ds: Dataset[Any]  # augmented (image, mask) pairs; ``epoch`` seeds their augmentation
    val_ds: Dataset[Any]
    batch: int  # per process
    val_batch: int | None  # 1 in slide mode, else None (= batch)
    workers: int  # DataLoader workers
    threads: int  # torch threads of this process
    precision: str  # of the training forward pass: 'fp32' or e.g. 'bfloat16 autocast'
    inference: InferenceSettings  # how the model is meant to predict (resize, or slide at train_scale)
    loss_fn: SegmentationLoss

    def val_model(self, model: nn.Module | None = None) -> nn.Module:
        """``model`` (default: the weights validation scores) as validation runs it (slid when training on crops)."""
        ...

    def emit(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback (e.g. ``on_plots`` after drawing pictures)."""
        ...


class Callback:
    """Base class: every event is a no-op. ``trainer`` is a :class:`TrainerState`: ``cfg``, ``save_dir``,
    ``model``, ``spec``, ``history``, ``best_epoch``..."""

    def on_train_start(self, trainer: TrainerState) -> None:
        """After set-up, before the first epoch (also when resuming)."""

    def on_epoch_start(self, trainer: TrainerState, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def on_epoch_end(self, trainer: TrainerState, row: dict[str, float]) -> None:
        """After validation and checkpointing; ``row`` is the epoch's results.csv row."""

    def on_plots(self, trainer: TrainerState, epoch: int, paths: dict[str, Path]) -> None:
        """After the run's pictures were redrawn (``paths``: name -> PNG): the data pictures (epoch 0, after every
        callback's ``on_train_start``), then an epoch's curves and predictions (after its ``on_epoch_end``)."""

    def on_train_end(self, trainer: TrainerState, result: TrainResult) -> None:
        """After the last epoch (or an early stop / interruption), with the final result."""


class Events:
    """Delivers the trainer's events to its callbacks, in the order the callbacks were given.

    An event emitted while another is being delivered (the run folder's callback emits ``on_plots`` from its
    ``on_train_start`` and ``on_epoch_end``) waits until every callback has had the current one: so each callback
    sees ``on_train_start`` before any picture, and an epoch's ``on_epoch_end`` before that epoch's pictures.
    """

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)
        self._queue: list[tuple[str, tuple[Any, ...]]] = []

    def emit(self, trainer: TrainerState, event: str, *args: Any) -> None:
        self._queue.append((event, args))
        if len(self._queue) > 1:  # called from inside a delivery: the loop below reaches it
            return
        try:
            while self._queue:
                name, event_args = self._queue[0]
                for callback in self.callbacks:
                    getattr(callback, name)(trainer, *event_args)
                self._queue.pop(0)
        finally:
            self._queue.clear()  # a callback that raised must not leave stale events behind


__all__ = ["Callback", "Events", "TrainResult", "TrainerState"]
