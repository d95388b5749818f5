"""Exponential moving average (EMA) of the weights, the averaged copy that validation and checkpoints use.

Averaging the weights over the last few hundred optimizer steps smooths out the step-to-step noise of small
batches, which is what a run of a few thousand steps on a few hundred images has. It is built on
:class:`torch.optim.swa_utils.AveragedModel` (parameters *and* BatchNorm buffers averaged, ``use_buffers=True``)
with the warm-up of timm's / Ultralytics' EMA: the decay starts low and rises to ``decay`` (step ``n`` uses
``min(decay, (1 + n) / (10 + n))``), so the first epochs are not dominated by the random initial decoder.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = WeightEMA(net, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> ema.update(net)
    >>> bool(torch.allclose(ema.module.weight, net.weight))  # step 1 copies (warm-up decay 0)
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (0-based): the warm-up ramp, capped at ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightEMA:
    """An averaged copy of ``model`` (``.module``), updated after every optimizer step.

    Args:
        model: the model being trained; it is deep-copied, and the copy never receives gradients.
        decay: the target decay (e.g. 0.99: an average over roughly the last 100 steps).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be between 0 and 1 (exclusive), got {decay}")
        self.decay = decay
        self._avg = AveragedModel(copy.deepcopy(model), multi_avg_fn=self._lerp, use_buffers=True)
        self._avg.module.requires_grad_(False)

    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: Any) -> None:
        d = ema_decay(self.decay, int(n_averaged))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the model
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    @property
    def module(self) -> nn.Module:
        """The averaged model (what validation, best.pt and last.pt's ``model`` hold)."""
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged.item())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights and buffers into the average (call after each optimizer step)."""
        self._avg.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        """For last.pt: the number of updates (the averaged weights themselves are the checkpoint's ``model``)."""
        return {"decay": self.decay, "updates": self.updates}

    def load(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the average from a checkpoint's averaged ``weights`` and :meth:`state_dict` (resume)."""
        self.module.load_state_dict(weights)
        self._avg.n_averaged.fill_(int(state.get("updates", 0)))


__all__ = ["WeightEMA", "ema_decay"]
