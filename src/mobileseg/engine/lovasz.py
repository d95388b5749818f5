"""The Lovasz losses (Berman et al. 2018): the Lovasz extension of the Jaccard loss, binary hinge and softmax.

A differentiable surrogate of 1 - IoU: pixel errors sorted in decreasing order, weighted by the increments of the
Jaccard loss along that order. :class:`mobileseg.engine.loss.SegmentationLoss` uses them for its ``lovasz`` term
on the batch's valid (not ignored) pixels, flattened.

Example:
    >>> import torch
    >>> float(lovasz_hinge(torch.tensor([5.0, -5.0]), torch.tensor([1.0, 0.0])))  # confident and right: 0
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted in decreasing order.

    With ``g`` the ground truth (0/1) in that order and ``G`` its sum, the Jaccard loss of the first ``i`` pixels
    predicted as foreground is ``J_i = 1 - (G - cumsum(g)_i) / (G + cumsum(1 - g)_i)``; the weights are its
    increments ``J_1, J_2 - J_1, ...`` (Berman et al. 2018, Algorithm 1).
    """
    total = gt_sorted.sum()
    intersection = total - gt_sorted.cumsum(0)
    union = total + (1 - gt_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_hinge(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge over the given (already unignored, flattened) pixels."""
    signs = 2 * truth - 1
    errors = 1 - logits * signs
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(F.relu(errors_sorted), _lovasz_grad(truth[order]))


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax over pixels ``probs [P, C]`` / ``target [P]``, averaged over the classes present."""
    losses = []
    for c in torch.unique(target).tolist():
        fg = (target == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    return torch.stack(losses).mean()
