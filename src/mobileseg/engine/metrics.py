"""Segmentation metrics from one confusion matrix.

Everything (pixel accuracy, precision, recall, IoU, Dice) is derived from a single ``num_classes x num_classes``
matrix accumulated over the whole split with ``torch.bincount``, as torchvision's segmentation reference does, so
the figures are exact over all pixels (never an average of batch averages) and a single ``all_reduce`` makes
every DDP process agree. Ignore pixels never enter the matrix.

Binary models report the foreground class (index 1); multi-class models report the macro mean over classes
(``iou`` is then the mIoU), with per-class values alongside.

Example:
    >>> cm = ConfusionMatrix(2)
    >>> cm.update(torch.tensor([[0, 1, 1, 255]]), torch.tensor([[0, 1, 0, 1]]))
    >>> round(cm.compute()["iou"], 3)
    0.5
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from mobileseg.engine.runtime import all_reduce

METRIC_NAMES = ("accuracy", "precision", "recall", "iou", "dice")


class ConfusionMatrix:
    """Rows are the true class, columns the predicted class; pixels whose target is ``ignore_index`` are skipped.

    Args:
        num_classes: number of classes (2 for a binary model: background and foreground).
        ignore_index: target value that is excluded from every metric.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.mat.zero_()

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Add a batch of class-index maps (any shape, equal shapes)."""
        n = self.num_classes
        target = target.reshape(-1).to(torch.int64)
        pred = pred.reshape(-1).to(torch.int64)
        keep = (target >= 0) & (target < n) & (target != self.ignore_index)
        idx = n * target[keep] + pred[keep]
        counts = torch.bincount(idx, minlength=n * n).reshape(n, n)
        self.mat += counts.cpu()

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all DDP processes so each holds the figures of the whole split."""
        self.mat = all_reduce(self.mat)

    def per_class(self) -> dict[str, list[float]]:
        """Per-class precision, recall, IoU, Dice and support; NaN where a class has neither truth nor prediction."""
        mat = self.mat.double()
        tp = mat.diag()
        support = mat.sum(1)
        predicted = mat.sum(0)
        fp = predicted - tp
        fn = support - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)

        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            return torch.where(den > 0, num / den.clamp(min=1), nan)

        return {
            "precision": ratio(tp, tp + fp).tolist(),
            "recall": ratio(tp, tp + fn).tolist(),
            "iou": ratio(tp, tp + fp + fn).tolist(),
            "dice": ratio(2 * tp, 2 * tp + fp + fn).tolist(),
            "support": support.long().tolist(),
        }

    def compute(self) -> dict[str, float]:
        """The headline metrics: foreground class for binary, macro mean (NaN classes skipped) for multi-class."""
        total = self.mat.sum().item()
        accuracy = self.mat.diag().sum().item() / total if total else float("nan")
        per = self.per_class()
        out = {"accuracy": accuracy}
        for name in ("precision", "recall", "iou", "dice"):
            values = per[name]
            if self.num_classes == 2:
                out[name] = values[1]
            else:
                finite = [v for v in values if not math.isnan(v)]
                out[name] = sum(finite) / len(finite) if finite else float("nan")
        return out


class EpochTally:
    """One training epoch's running figures: loss sum, image count, seconds and the confusion matrix.

    It survives a Ctrl-C: the trainer stores :meth:`state_dict` (summed over DDP ranks) in ``last.pt`` with the
    exact step, and the resumed epoch starts from it, so that epoch's row in results.csv covers all its steps
    rather than only those after the resume (or none at all, NaN, when the interrupt fell on its last step).

    Args:
        num_classes: classes of the confusion matrix.
        ignore_index: target value left out of the train metrics.
        carried: a saved :meth:`state_dict` the epoch goes on from. Its sums are already those of every rank, so
            each rank adds them once, after :meth:`reduce` has summed this session's steps.
    """

    def __init__(self, num_classes: int, ignore_index: int, carried: dict[str, Any] | None = None) -> None:
        self.cm = ConfusionMatrix(num_classes, ignore_index)
        self.loss_sum, self.seen = 0.0, 0
        self._carried = carried
        self._before = float(carried["seconds"]) if carried else 0.0
        self._start = time.perf_counter()

    def update(self, loss: float, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Add one step: its mean loss, and the batch's targets and predicted class maps."""
        self.loss_sum += loss * target.shape[0]
        self.seen += target.shape[0]
        self.cm.update(target, pred)

    @property
    def elapsed(self) -> float:
        """Seconds since this tally started: this session's share of the epoch."""
        return time.perf_counter() - self._start

    @property
    def seconds(self) -> float:
        """The epoch's seconds so far, those before a resume included."""
        return self._before + self.elapsed

    def reduce(self) -> None:
        """Sum the loss, count and matrix over all DDP ranks (a collective: every rank calls it), then add the
        figures carried over from before a resume."""
        totals = all_reduce(torch.tensor([self.loss_sum, self.seen], dtype=torch.float64))
        self.loss_sum, self.seen = totals[0].item(), int(totals[1].item())
        self.cm.reduce_from_all_processes()
        if self._carried:
            self.loss_sum += float(self._carried["loss_sum"])
            self.seen += int(self._carried["seen"])
            self.cm.mat += torch.as_tensor(self._carried["confusion"], dtype=torch.int64)
            self._carried = None

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "seen": self.seen, "seconds": self.seconds, "confusion": self.cm.mat}

    def compute(self) -> dict[str, float]:
        """The epoch's row: ``train/loss``, ``train/<metric>``, ``epoch_s`` and ``img_s`` (all ranks' images)."""
        seconds = self.seconds
        stats = {"train/loss": self.loss_sum / self.seen if self.seen else math.nan}
        stats.update({f"train/{k}": v for k, v in self.cm.compute().items()})
        stats["epoch_s"] = seconds
        stats["img_s"] = self.seen / seconds if seconds else math.nan
        return stats


def logits_to_pred(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class-index map from logits: sigmoid > threshold for 1 channel, argmax otherwise."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > math.log(threshold / (1 - threshold))).long()
    return logits.argmax(1)


def image_iou(target: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int = 255) -> float:
    """IoU of one image: foreground IoU for binary, mean over classes present in truth or prediction otherwise.

    An image with no foreground in either map scores 1.0 (nothing to find, nothing found).
    """
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(target, pred)
    value = cm.compute()["iou"]
    return 1.0 if math.isnan(value) else value
