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

# Values sorted in one call by lovasz_softmax (2**24: 64 MB of float32 errors, 128 MB of int64 order).
ROWS_ELEMENTS = 1 << 24


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss for errors sorted in decreasing order (along the last
    dimension: one row per class).

    With ``g`` the ground truth (0/1) in that order and ``G`` its sum, the Jaccard loss of the first ``i`` pixels
    predicted as foreground is ``J_i = 1 - (G - cumsum(g)_i) / (G + cumsum(1 - g)_i)``; the weights are its
    increments ``J_1, J_2 - J_1, ...`` (Berman et al. 2018, Algorithm 1).
    """
    total = gt_sorted.sum(-1, keepdim=True)
    intersection = total - gt_sorted.cumsum(-1)
    union = total + (1 - gt_sorted).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_hinge(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge over the given (already unignored, flattened) pixels."""
    signs = 2 * truth - 1
    errors = 1 - logits * signs
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(F.relu(errors_sorted), _lovasz_grad(truth[order]))


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax over pixels ``probs [P, C]`` / ``target [P]``, averaged over the classes present.

    The present classes' errors are sorted a block of rows at a time (one row per class) rather than one class
    per call: the rows sort in parallel, and sorting is where this loss spends its time on a large multi-class
    batch (CamVid's 11 classes over a batch of 8 at 352x480, forward and backward on 2 threads: 1.5-1.7 s against
    2.1-2.4 s one class at a time). A block holds at most ``ROWS_ELEMENTS`` values, so a large batch does not need
    every class's sort buffers at once.
    """
    present = torch.unique(target)
    per_block = max(1, ROWS_ELEMENTS // max(1, target.numel()))
    losses = []
    for classes in present.split(per_block):
        fg = (target.unsqueeze(0) == classes.unsqueeze(1)).to(probs.dtype)  # [K, P]
        errors = (fg - probs.t()[classes]).abs()
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        losses.append((errors_sorted * _lovasz_grad(fg.gather(1, order))).sum(1))
    return torch.cat(losses).mean()
