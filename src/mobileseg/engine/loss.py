"""Training losses: pixel cross-entropy, Dice, focal, Lovasz, Tversky, and weighted sums of them.

A loss is chosen with one string (``loss=`` in :class:`mobileseg.config.TrainConfig`)::

    bce            # pixel cross-entropy: BCE-with-logits for a binary (1-logit) model, softmax CE otherwise
    ce             # the same term (``bce`` and ``ce`` are two names for it)
    dice           # soft Dice
    focal          # focal loss, exponent focal_gamma
    lovasz         # Lovasz hinge (binary) / Lovasz-softmax (multi-class), Berman et al. 2018
    tversky        # Tversky loss, tversky_alpha on false positives, tversky_beta on false negatives
    bce+dice       # a sum: every term has weight 1
    bce:1+dice:0.5 # a weighted sum: ``name:weight`` terms joined by ``+``
    auto           # bce/ce, or bce/ce + dice when a class is rare in the train split (see choose_loss)

Every term skips ``ignore_index`` pixels and takes either binary input (logits ``N,1,H,W``, targets 0/1/ignore)
or multi-class input (logits ``N,C,H,W``, targets class index/ignore). Class weights (``pos_weight`` for a binary
model, ``class_weights`` for either) weight the pixel-wise terms (cross-entropy and focal); the region terms
(Dice, Tversky, Lovasz) measure overlap per class and take no weights.

Example:
    >>> import torch
    >>> loss = SegmentationLoss(1, loss="bce:1+dice:0.5")
    >>> loss.describe()
    'bce + 0.5*dice'
    >>> float(loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 1], [1, 255]]]))) > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobileseg.engine.loss_auto import auto_class_weights, choose_loss
from mobileseg.engine.loss_auto import count_class_pixels as count_class_pixels  # re-exported: the trainer counts
from mobileseg.engine.lovasz import lovasz_hinge, lovasz_softmax
from mobileseg.errors import ConfigError
from mobileseg.loss_spec import PIXEL_XENT, format_loss_spec, parse_loss_spec

if TYPE_CHECKING:
    from mobileseg.config import TrainConfig

# ------------------------------------------------------------------------------------------------ constants

SMOOTH = 1.0  # added to numerator and denominator of Dice/Tversky: an absent class with no prediction costs 0

# ------------------------------------------------------------------------------------------------ the terms


class SegmentationLoss(nn.Module):
    """A weighted sum of loss terms; every term skips ``ignore_index`` pixels.

    Build it with :func:`build_loss` from a config (that resolves ``auto``); the constructor takes a resolved
    spec. Called as ``loss(logits, target)`` with logits ``[N, C, H, W]`` (C = 1: binary) and int targets
    ``[N, H, W]``; returns a scalar.

    Term definitions (``p`` = sigmoid/softmax probabilities, ``g`` = one-hot truth, sums over valid pixels):

    * ``bce``/``ce``: mean pixel cross-entropy. Binary: BCE-with-logits, each pixel times its class weight, divided
      by the valid pixel count (so ``pos_weight`` means what it means in PyTorch). Multi-class: softmax CE, the
      class-weighted mean (``sum w_t * l / sum w_t``, as ``F.cross_entropy`` computes it).
    * ``focal``: the same with each pixel's loss times ``(1 - p_t) ** focal_gamma`` (Lin et al. 2017).
    * ``dice``: ``1 - (2 sum pg + 1) / (sum p + sum g + 1)`` per class over the whole batch, mean over classes
      (binary: the foreground only).
    * ``tversky``: ``1 - (TP + 0.5) / (TP + alpha FP + beta FN + 0.5)`` with soft counts, same classes as Dice;
      with ``alpha = beta = 0.5`` it is exactly the Dice term (Salehi et al. 2017).
    * ``lovasz``: binary: the Lovasz hinge on the logits; multi-class: the Lovasz-softmax averaged over the classes
      present in the batch's targets; both over the batch's valid pixels pooled together.

    Args:
        out_channels: the model's output channels (1 = binary; N = N classes).
        ignore_index: target value excluded from every term.
        pos_weight: foreground weight in BCE/focal (binary only; ignored for a multi-class model).
        class_weights: weight per class in CE/focal: C values (multi-class) or 2 values [background, foreground]
            (binary; a single value, which older versions accepted and ignored, is still ignored).
        dice_weight: legacy: > 0 adds ``dice:<dice_weight>`` to ``loss``.
        loss: resolved loss spec (see :func:`parse_loss_spec`; not ``auto``).
        focal_gamma: focal exponent (0 turns focal into cross-entropy).
        tversky_alpha: Tversky weight of false positives.
        tversky_beta: Tversky weight of false negatives.
        note: extra text for :meth:`describe` (e.g. why ``auto`` chose this loss).
        weights_note: text shown after the class weights in :meth:`describe` (e.g. how ``auto`` chose them).

    Example:
        >>> loss = SegmentationLoss(3, loss="ce+lovasz:0.5", class_weights=[0.5, 1.0, 2.0])
        >>> loss.describe()
        'ce + 0.5*lovasz; class weights 0.5, 1, 2'
    """

    def __init__(
        self,
        out_channels: int,
        ignore_index: int = 255,
        pos_weight: float | None = None,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        *,
        loss: str = "ce",
        focal_gamma: float = 2.0,
        tversky_alpha: float = 0.3,
        tversky_beta: float = 0.7,
        note: str = "",
        weights_note: str = "",
    ) -> None:
        super().__init__()
        self.binary = out_channels == 1
        self.out_channels = out_channels
        self.ignore_index = ignore_index
        terms = parse_loss_spec(loss)
        if terms[0][0] == "auto":
            raise ValueError("SegmentationLoss takes a resolved loss; build_loss() resolves 'auto'")
        if dice_weight:
            if any(name == "dice" for name, _ in terms):
                raise ConfigError(f"dice_weight={dice_weight:g} and loss '{loss}' both give a Dice term; keep one")
            terms.append(("dice", float(dice_weight)))
        xent = "bce" if self.binary else "ce"
        self.terms = [(xent if name in PIXEL_XENT else name, w) for name, w in terms]
        self.dice_weight = dice_weight  # kept for code that read it
        self.focal_gamma = float(focal_gamma)
        self.tversky_alpha = float(tversky_alpha)
        self.tversky_beta = float(tversky_beta)
        self.note = note
        self.weights_note = weights_note
        self._weight_text = ""
        weights: list[float] | None = None
        if self.binary:
            if class_weights is not None and len(class_weights) == 2:
                if pos_weight is not None:
                    raise ConfigError("give pos_weight or class_weights for a binary model, not both")
                weights = [float(w) for w in class_weights]
                self._weight_text = f"class weights {weights[0]:.3g}, {weights[1]:.3g}"
            elif class_weights is not None and len(class_weights) != 1:
                raise ConfigError(
                    f"class_weights has {len(class_weights)} values; a binary model takes 2 (background, foreground)"
                )
            if pos_weight is not None:
                weights = [1.0, float(pos_weight)]
                self._weight_text = f"pos_weight {float(pos_weight):.3g}"
        elif class_weights is not None:
            if len(class_weights) != out_channels:
                raise ConfigError(f"class_weights has {len(class_weights)} values for {out_channels} classes")
            weights = [float(w) for w in class_weights]
            self._weight_text = "class weights " + ", ".join(f"{w:.3g}" for w in weights)
        if weights is not None and (any(w < 0 for w in weights) or not sum(weights) > 0):
            raise ConfigError(f"class weights must be >= 0 and not all 0 (got {weights})")
        self.register_buffer(
            "class_weights",
            torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
            persistent=False,
        )

    @property
    def spec(self) -> str:
        """The resolved loss as a spec string (``bce+dice:0.5``)."""
        return format_loss_spec(self.terms)

    def describe(self) -> str:
        """One line for logs and the model card: the terms, their weights, the class weights, and any note."""
        parts = []
        for name, w in self.terms:
            label = name
            if name == "focal":
                label = f"focal(gamma={self.focal_gamma:g})"
            elif name == "tversky":
                label = f"tversky(alpha={self.tversky_alpha:g}, beta={self.tversky_beta:g})"
            parts.append(label if w == 1 else f"{w:g}*{label}")
        text = " + ".join(parts)
        weights = f"{self._weight_text} ({self.weights_note})" if self._weight_text and self.weights_note else ""
        extras = [e for e in (self.note, weights or self._weight_text) if e]
        return "; ".join([text, *extras])

    # ------------------------------------------------------------------------------------------ the terms

    def _pixel_term(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, gamma: float):
        """Cross-entropy (gamma = 0) or focal loss, class-weighted, over valid pixels."""
        if self.binary:
            truth = (target == 1).float()
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], truth, reduction="none")
        else:
            loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        if gamma:
            loss = (1 - torch.exp(-loss)).pow(gamma) * loss  # exp(-loss) is the probability of the true class
        weight = valid.float()
        if self.class_weights is not None:
            cls = (target == 1).long() if self.binary else target.clamp(0, self.out_channels - 1)
            weight = weight * self.class_weights[cls]
        total = (loss * weight).sum()
        if self.binary:  # PyTorch's pos_weight convention: divide by the pixel count
            return total / valid.sum().clamp(min=1)
        return total / weight.sum().clamp(min=1e-12)

    def _region_stats(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
        """Soft TP, sum of p, sum of g per class over valid pixels (binary: the foreground only)."""
        mask = valid.unsqueeze(1).float()
        if self.binary:
            probs = torch.sigmoid(logits)
            onehot = (target == 1).float().unsqueeze(1)
        else:
            probs = logits.softmax(1)
            onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
        dims = (0, 2, 3)
        tp = (probs * onehot * mask).sum(dims)
        return tp, (probs * mask).sum(dims), (onehot * mask).sum(dims)

    def _lovasz(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if not valid.any():
            return logits.sum() * 0
        if self.binary:
            return lovasz_hinge(logits[:, 0][valid], (target[valid] == 1).float())
        probs = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # [P, C]
        return lovasz_softmax(probs, target[valid])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = target != self.ignore_index
        stats = None
        total = logits.new_zeros(())
        for name, w in self.terms:
            if name in PIXEL_XENT:
                term = self._pixel_term(logits, target, valid, 0.0)
            elif name == "focal":
                term = self._pixel_term(logits, target, valid, self.focal_gamma)
            elif name == "lovasz":
                term = self._lovasz(logits, target, valid)
            else:
                if stats is None:
                    stats = self._region_stats(logits, target, valid)
                tp, p_sum, g_sum = stats
                if name == "dice":
                    score = (2 * tp + SMOOTH) / (p_sum + g_sum + SMOOTH)
                else:  # tversky: FP = sum p - TP, FN = sum g - TP
                    fp, fn = p_sum - tp, g_sum - tp
                    half = SMOOTH / 2  # half of Dice's: alpha = beta = 0.5 then gives exactly the Dice term
                    score = (tp + half) / (tp + self.tversky_alpha * fp + self.tversky_beta * fn + half)
                term = (1 - score).mean()
            total = total + w * term
        return total


# ------------------------------------------------------------------------------------------------ the builder


def _uses_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def build_loss(
    train_cfg: TrainConfig,
    out_channels: int,
    ignore_index: int,
    pixel_counts: Sequence[int] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> SegmentationLoss:
    """The loss module the trainer uses, with every ``auto`` resolved from the train split's pixel counts.

    * ``loss=auto``: with ``dice_weight > 0`` (a config from before ``loss`` existed) it is exactly the old
      ``bce/ce + dice:<dice_weight>``; otherwise :func:`choose_loss` decides; without counts it is ``bce``/``ce``.
      When it picks Dice for a rare binary foreground and no weight is set, ``pos_weight`` becomes ``auto`` too.
    * ``class_weights=auto`` / ``pos_weight=auto``: :func:`auto_class_weights` (for a binary model both mean the
      foreground weight; ``pos_weight`` is ignored by a multi-class model, as before).

    Args:
        train_cfg: the ``train`` section of the config.
        out_channels: the model's output channels (1 = binary).
        ignore_index: the dataset's ignore value.
        pixel_counts: labelled train pixels per class (:func:`count_class_pixels`; 2 values for binary); needed
            only when something is ``auto``.
        names: class names, so the ``auto`` reason can name the rarest class.

    Raises:
        ConfigError: a weight set to ``auto`` without pixel counts, or a class-weight count that does not match.

    Example:
        >>> from mobileseg.config import TrainConfig
        >>> build_loss(TrainConfig(loss="auto"), 1, 255, pixel_counts=[988, 12]).describe()
        'bce + dice; auto: foreground is 1.2 % of train pixels; pos_weight 9.07 (auto: inverse sqrt frequency)'
    """
    binary = out_channels == 1
    counts = None if pixel_counts is None else np.asarray(pixel_counts, dtype=np.float64)
    if counts is not None and counts.size != (2 if binary else out_channels):
        raise ValueError(f"pixel_counts has {counts.size} values for {2 if binary else out_channels} classes")
    notes: list[str] = []
    weights_note = ""

    spec = train_cfg.loss
    dice_weight = train_cfg.dice_weight
    rare_binary = False
    if _uses_auto(spec):
        if dice_weight:
            spec, dice_weight = f"ce+dice:{dice_weight:g}", 0.0
        elif counts is None:
            spec = "ce"
            notes.append("auto: no pixel counts, plain cross-entropy")
        else:
            shares = dict(zip(names, counts.tolist(), strict=True)) if names is not None else counts
            spec, reason = choose_loss(shares, binary)
            notes.append(f"auto: {reason}")
            rare_binary = binary and "dice" in spec

    pos_weight, class_weights = train_cfg.pos_weight, train_cfg.class_weights
    if rare_binary and pos_weight is None and class_weights is None:
        # A rare foreground also gets BCE's pos_weight: with Dice alone the thin CamVid poles stayed under p=0.5
        # for 5 epochs (recall 0); see AUTO_BINARY_RARE_SHARE and the README's thin-structure table.
        pos_weight = "auto"
    if not binary:
        pos_weight = None  # a binary-only key, ignored by a multi-class model as it always was
    elif _uses_auto(class_weights) and pos_weight is not None and not _uses_auto(pos_weight):
        raise ConfigError(f"class_weights=auto and pos_weight={pos_weight} both set the foreground weight; keep one")
    if _uses_auto(class_weights) or _uses_auto(pos_weight):
        if counts is None:
            raise ConfigError("class_weights=auto / pos_weight=auto need the train split's pixel counts")
        weights = auto_class_weights(counts, binary)
        if binary:
            pos_weight, class_weights = float(weights[1]), None
        else:
            class_weights = weights.tolist()
        weights_note = "auto: inverse sqrt frequency"
    return SegmentationLoss(
        out_channels,
        ignore_index,
        pos_weight,
        class_weights,
        dice_weight,
        loss=spec,
        focal_gamma=train_cfg.focal_gamma,
        tversky_alpha=train_cfg.tversky_alpha,
        tversky_beta=train_cfg.tversky_beta,
        note="; ".join(notes),
        weights_note=weights_note,
    )
