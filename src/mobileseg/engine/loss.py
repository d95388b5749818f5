"""Training loss: BCE-with-logits for a binary model, cross-entropy for multi-class, optional Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationLoss(nn.Module):
    """Pixel loss that skips ``ignore_index`` pixels in every term.

    Args:
        out_channels: the model's output channels (1 = binary, with BCE; N = cross-entropy over N classes).
        ignore_index: target value excluded from the loss.
        pos_weight: BCE weight of the foreground class (binary only), for rare foregrounds.
        class_weights: cross-entropy weight per class (multi-class only).
        dice_weight: weight of an added soft-Dice term (0 = off), which helps small structures.
    """

    def __init__(
        self,
        out_channels: int,
        ignore_index: int = 255,
        pos_weight: float | None = None,
        class_weights: list[float] | None = None,
        dice_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.binary = out_channels == 1
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        if class_weights is not None and len(class_weights) != out_channels:
            raise ValueError(f"class_weights has {len(class_weights)} values for {out_channels} classes")
        self.register_buffer(
            "pos_weight", torch.tensor([pos_weight]) if pos_weight is not None else None, persistent=False
        )
        self.register_buffer(
            "class_weights",
            torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None,
            persistent=False,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = target != self.ignore_index
        if self.binary:
            truth = (target == 1).float()
            bce = F.binary_cross_entropy_with_logits(logits[:, 0], truth, reduction="none", pos_weight=self.pos_weight)
            loss = (bce * valid).sum() / valid.sum().clamp(min=1)
            probs = torch.sigmoid(logits)
            onehot = truth.unsqueeze(1)
        else:
            loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
            if not self.dice_weight:
                return loss
            probs = logits.softmax(1)
            onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
        if self.dice_weight:
            mask = valid.unsqueeze(1).float()
            inter = (probs * onehot * mask).sum((0, 2, 3))
            denom = ((probs + onehot) * mask).sum((0, 2, 3))
            dice = 1 - (2 * inter + 1) / (denom + 1)
            loss = loss + self.dice_weight * dice.mean()
        return loss
