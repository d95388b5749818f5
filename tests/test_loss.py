"""Every loss term against a value worked out by hand on a tiny tensor; ignored pixels never count.

Binary case (1x1x2x2 logits, targets ``[[1, 1], [0, ignore]]``): the logits 0, ln 3, -ln 3 give sigmoid
probabilities 0.5, 0.75, 0.25, so the valid pixels are p = (0.5, 0.75, 0.25) with truth g = (1, 1, 0).

Multi-class case (1x3x2x2 logits, targets ``[[0, 2], [2, ignore]]``): logits ``ln(2,1,1)``, ``ln(1,2,1)``,
``ln(1,1,2)`` give softmax rows (0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (0.25, 0.25, 0.5).

The ignored pixel's logits are then replaced by wild values: every loss must stay exactly the same.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mobileseg.config import ConfigError, TrainConfig, load_config
from mobileseg.engine.loss import SegmentationLoss, build_loss, parse_loss_spec
from mobileseg.engine.loss_auto import (
    AUTO_BINARY_RARE_SHARE,
    AUTO_MULTICLASS_RARE_SHARE,
    auto_class_weights,
    choose_loss,
    count_class_pixels,
)

IGN = 255
LN2, LN3 = math.log(2), math.log(3)


def binary_case(ignored_logit: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor([[[[0.0, LN3], [-LN3, ignored_logit]]]])
    target = torch.tensor([[[1, 1], [0, IGN]]])
    return logits, target


def multi_case(ignored: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    pix = [[math.log(v) for v in r] for r in rows] + [list(ignored)]
    logits = torch.tensor(pix, dtype=torch.float32).T.reshape(1, 3, 2, 2)  # pixels in row-major order
    target = torch.tensor([[[0, 2], [2, IGN]]])
    return logits, target


def value(loss: SegmentationLoss, logits: torch.Tensor, target: torch.Tensor) -> float:
    return loss(logits, target).item()


# ------------------------------------------------------------------------------------------------ binary

# BCE: -ln 0.5 = ln 2; -ln 0.75 = ln(4/3); -ln(1 - 0.25) = ln(4/3); mean over 3 valid pixels.
BCE = (LN2 + 2 * math.log(4 / 3)) / 3
# Focal, gamma 2: p_t = 0.5, 0.75, 0.75 -> (1 - p_t)^2 = 0.25, 0.0625, 0.0625.
FOCAL_BIN = (0.25 * LN2 + 2 * 0.0625 * math.log(4 / 3)) / 3
# Dice on the foreground: TP = 0.5 + 0.75 = 1.25, sum p = 1.5, sum g = 2 -> 1 - (2.5 + 1) / (3.5 + 1) = 2/9.
DICE_BIN = 1 - 3.5 / 4.5
# Tversky (0.3, 0.7, smoothing 0.5): FP = 1.5 - 1.25 = 0.25, FN = 2 - 1.25 = 0.75
#   -> 1 - (1.25 + 0.5) / (1.25 + 0.075 + 0.525 + 0.5).
TVERSKY_BIN = 1 - 1.75 / 2.35

BINARY_CASES = {
    "bce": BCE,
    "ce": BCE,  # the same term under its other name
    "focal": FOCAL_BIN,
    "dice": DICE_BIN,
    "tversky": TVERSKY_BIN,
}


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_binary_terms_match_hand_values_and_skip_ignored(name):
    loss = SegmentationLoss(1, IGN, loss=name)
    assert value(loss, *binary_case()) == pytest.approx(BINARY_CASES[name], rel=1e-6)
    assert value(loss, *binary_case(ignored_logit=-40.0)) == pytest.approx(BINARY_CASES[name], rel=1e-6)
    assert value(loss, *binary_case(ignored_logit=40.0)) == pytest.approx(BINARY_CASES[name], rel=1e-6)


def test_binary_lovasz_hinge_hand_value():
    # Valid logits (2, -1, 0.5), truth (1, 1, 0): signs (1, 1, -1), hinge errors 1 - x*s = (-1, 2, 1.5).
    # Sorted descending: 2 (g=1), 1.5 (g=0), -1 (g=1). With G = 2: intersection G - cumsum(g) = (1, 1, 0),
    # union G + cumsum(1-g) = (2, 3, 3), Jaccard loss = (1/2, 2/3, 1), increments (1/2, 1/6, 1/3).
    # Loss = relu(2)*1/2 + relu(1.5)*1/6 + relu(-1)*1/3 = 1.25.
    loss = SegmentationLoss(1, IGN, loss="lovasz")
    target = torch.tensor([[[1, 1], [0, IGN]]])
    for wild in (-30.0, 30.0):
        logits = torch.tensor([[[[2.0, -1.0], [0.5, wild]]]])
        assert value(loss, logits, target) == pytest.approx(1.25, rel=1e-6)


def test_pos_weight_and_binary_class_weights():
    # pos_weight 2 doubles the two foreground pixels' BCE; the mean still divides by the 3 valid pixels.
    expected = (2 * LN2 + 2 * 2 * math.log(4 / 3) - math.log(4 / 3)) / 3
    assert expected == pytest.approx((2 * LN2 + 3 * math.log(4 / 3)) / 3)
    assert value(SegmentationLoss(1, IGN, pos_weight=2.0), *binary_case()) == pytest.approx(expected, rel=1e-6)
    # Binary class weights are [background, foreground]: [1, 2] is the same as pos_weight 2.
    by_class = SegmentationLoss(1, IGN, class_weights=[1.0, 2.0])
    assert value(by_class, *binary_case(ignored_logit=9.0)) == pytest.approx(expected, rel=1e-6)
    # The torch implementation agrees (pos_weight semantics kept from the old loss).
    logits, target = binary_case()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[0, 0].flatten()[:3], torch.tensor([1.0, 1.0, 0.0]), pos_weight=torch.tensor([2.0])
    )
    assert expected == pytest.approx(ref.item(), rel=1e-6)


def test_binary_focal_pos_weight():
    # Focal with pos_weight 2: foreground pixels (0.25 ln2 and 0.0625 ln(4/3)) count twice.
    expected = (2 * 0.25 * LN2 + 2 * 0.0625 * math.log(4 / 3) + 0.0625 * math.log(4 / 3)) / 3
    loss = SegmentationLoss(1, IGN, pos_weight=2.0, loss="focal")
    assert value(loss, *binary_case()) == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------------ multi-class

# CE: -ln p_true = -ln 0.5, -ln 0.25, -ln 0.5 = ln2, 2 ln2, ln2 -> mean 4 ln2 / 3.
CE = 4 * LN2 / 3
# Focal, gamma 2: (1 - p_t)^2 = 0.25, 0.5625, 0.25 -> (0.25 ln2 + 0.5625 * 2 ln2 + 0.25 ln2) / 3.
FOCAL_MULTI = (0.25 + 1.125 + 0.25) * LN2 / 3
# Dice per class over the 3 valid pixels, then the mean:
#   class 0: p (0.5, 0.25, 0.25), g (1, 0, 0): TP 0.5, sum p 1, sum g 1 -> 1 - 2/3 = 1/3
#   class 1: p (0.25, 0.5, 0.25), g (0, 0, 0): TP 0, sum p 1, sum g 0 -> 1 - 1/2 = 1/2
#   class 2: p (0.25, 0.25, 0.5), g (0, 1, 1): TP 0.75, sum p 1, sum g 2 -> 1 - 2.5/4 = 3/8
DICE_MULTI = (1 / 3 + 1 / 2 + 3 / 8) / 3
# Tversky (alpha 0.3 on FP, beta 0.7 on FN, smoothing 0.5), FP = sum p - TP, FN = sum g - TP:
#   class 0: TP 0.5, FP 0.5, FN 0.5 -> 1 - 1 / (0.5 + 0.15 + 0.35 + 0.5) = 1 - 1/1.5
#   class 1: TP 0, FP 1, FN 0 -> 1 - 0.5 / (0.3 + 0.5)
#   class 2: TP 0.75, FP 0.25, FN 1.25 -> 1 - 1.25 / (0.75 + 0.075 + 0.875 + 0.5)
TVERSKY_MULTI = ((1 - 1 / 1.5) + (1 - 0.5 / 0.8) + (1 - 1.25 / 2.2)) / 3
# Lovasz-softmax over the classes present in the targets (0 and 2):
#   class 0: errors |g - p| = (0.5, 0.25, 0.25), sorted g = (1, 0, 0): Jaccard (1, 1, 1), increments (1, 0, 0) -> 0.5
#   class 2: errors (0.25, 0.75, 0.5) sorted 0.75 (g1), 0.5 (g1), 0.25 (g0): intersection (1, 0, 0),
#            union (2, 2, 3) -> Jaccard (1/2, 1, 1), increments (1/2, 1/2, 0) -> 0.75/2 + 0.5/2 = 0.625
LOVASZ_MULTI = (0.5 + 0.625) / 2

MULTI_CASES = {
    "ce": CE,
    "bce": CE,
    "focal": FOCAL_MULTI,
    "dice": DICE_MULTI,
    "tversky": TVERSKY_MULTI,
    "lovasz": LOVASZ_MULTI,
}


@pytest.mark.parametrize("name", list(MULTI_CASES))
def test_multiclass_terms_match_hand_values_and_skip_ignored(name):
    loss = SegmentationLoss(3, IGN, loss=name)
    assert value(loss, *multi_case()) == pytest.approx(MULTI_CASES[name], rel=1e-6)
    assert value(loss, *multi_case(ignored=(30.0, -30.0, 5.0))) == pytest.approx(MULTI_CASES[name], rel=1e-6)
    assert value(loss, *multi_case(ignored=(-30.0, 0.0, 30.0))) == pytest.approx(MULTI_CASES[name], rel=1e-6)


def test_multiclass_class_weights():
    # Weights (1, 1, 2): the two class-2 pixels count twice; the mean divides by the weight sum 1 + 2 + 2.
    expected = (LN2 + 2 * 2 * LN2 + 2 * LN2) / 5
    loss = SegmentationLoss(3, IGN, class_weights=[1.0, 1.0, 2.0])
    assert value(loss, *multi_case(ignored=(9.0, 0.0, 0.0))) == pytest.approx(expected, rel=1e-6)
    # Focal with the same weights: (0.25 ln2 + 2 * 0.5625 * 2 ln2 + 2 * 0.25 ln2) / 5.
    focal = SegmentationLoss(3, IGN, class_weights=[1.0, 1.0, 2.0], loss="focal")
    assert value(focal, *multi_case()) == pytest.approx((0.25 + 2.25 + 0.5) * LN2 / 5, rel=1e-6)


# ------------------------------------------------------------------------------------------------ sums


def test_weighted_sums_and_legacy_dice_weight():
    multi = multi_case(ignored=(7.0, -7.0, 0.0))
    assert value(SegmentationLoss(3, IGN, loss="ce:2+dice:0.5"), *multi) == pytest.approx(
        2 * CE + 0.5 * DICE_MULTI, rel=1e-6
    )
    assert value(SegmentationLoss(3, IGN, loss="focal+lovasz+tversky:3"), *multi) == pytest.approx(
        FOCAL_MULTI + LOVASZ_MULTI + 3 * TVERSKY_MULTI, rel=1e-6
    )
    assert value(SegmentationLoss(1, IGN, loss="bce+dice"), *binary_case()) == pytest.approx(BCE + DICE_BIN, rel=1e-6)
    # The old positional form (dice_weight) still means cross-entropy + that much Dice.
    assert value(SegmentationLoss(1, IGN, None, None, 0.5), *binary_case()) == pytest.approx(
        BCE + 0.5 * DICE_BIN, rel=1e-6
    )
    assert value(SegmentationLoss(3, IGN, None, None, 0.5), *multi) == pytest.approx(CE + 0.5 * DICE_MULTI, rel=1e-6)


def test_term_identities_and_gradients():
    # focal with gamma 0 is cross-entropy; Tversky with alpha = beta = 0.5 is Dice.
    torch.manual_seed(0)
    for channels in (1, 4):
        logits = torch.randn(2, channels, 5, 6, requires_grad=True)
        target = torch.randint(0, max(2, channels), (2, 5, 6))
        target[0, :2] = IGN
        ce = SegmentationLoss(channels, IGN, loss="ce")(logits, target)
        f0 = SegmentationLoss(channels, IGN, loss="focal", focal_gamma=0)(logits, target)
        assert f0.item() == pytest.approx(ce.item(), rel=1e-6)
        dice = SegmentationLoss(channels, IGN, loss="dice")(logits, target)
        tv = SegmentationLoss(channels, IGN, loss="tversky", tversky_alpha=0.5, tversky_beta=0.5)(logits, target)
        assert tv.item() == pytest.approx(dice.item(), rel=1e-6)
        total = SegmentationLoss(channels, IGN, loss="ce+dice+focal+lovasz+tversky")(logits, target)
        total.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()
        assert logits.grad[0, :, :2].abs().sum() == 0  # ignored pixels get no gradient from any term
        assert logits.grad.abs().sum() > 0


def test_all_ignored_batch_gives_zero_not_nan():
    for channels in (1, 3):
        logits = torch.randn(1, channels, 2, 2, requires_grad=True)
        target = torch.full((1, 2, 2), IGN)
        out = SegmentationLoss(channels, IGN, loss="ce+focal+lovasz+dice+tversky")(logits, target)
        out.backward()
        assert out.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_describe():
    loss = SegmentationLoss(1, IGN, pos_weight=3.0, loss="ce:1+dice:0.5+focal:2", focal_gamma=1.5)
    assert loss.describe() == "bce + 0.5*dice + 2*focal(gamma=1.5); pos_weight 3"
    assert loss.spec == "bce+dice:0.5+focal:2"
    assert SegmentationLoss(3, IGN, loss="bce").describe() == "ce"


# ------------------------------------------------------------------------------------------------ spec strings


@pytest.mark.parametrize(
    "bad, words",
    [
        ("foo", "unknown loss 'foo'"),
        ("bce+", "empty term"),
        ("bce:x", "must be a number > 0"),
        ("dice:-1", "must be a number > 0"),
        ("bce+ce", "appears twice"),
        ("auto+dice", "stands alone"),
        ("", "must be text"),
    ],
)
def test_bad_loss_strings_raise_config_error(bad, words):
    with pytest.raises(ConfigError, match=words):
        parse_loss_spec(bad)
    with pytest.raises(ConfigError, match=words if bad else "loss"):
        load_config(overrides={"loss": bad})


def test_config_keys():
    cfg = load_config(overrides=["loss=BCE + Dice:0.5", "class_weights=auto", "pos_weight=auto", "focal_gamma=1"])
    assert (cfg.train.loss, cfg.train.class_weights, cfg.train.pos_weight) == ("bce+dice:0.5", "auto", "auto")
    assert load_config(overrides=["class_weights=1,2,0.5"]).train.class_weights == [1.0, 2.0, 0.5]
    assert load_config().train.loss == "auto"
    with pytest.raises(ConfigError, match="both add a Dice term"):
        load_config(overrides=["dice_weight=0.5", "loss=bce+dice"])
    with pytest.raises(ConfigError, match="pos_weight must be > 0"):
        load_config(overrides=["pos_weight=0"])
    with pytest.raises(ConfigError, match="class_weights"):
        load_config(overrides=["class_weights=a,b"])
    # A config saved before these keys existed still loads and builds the same loss as before.
    old = load_config({"train": {"dice_weight": 0.3, "pos_weight": 2.0}})
    assert build_loss(old.train, 1, IGN).describe() == "bce + 0.3*dice; pos_weight 2"


# ------------------------------------------------------------------------------------------------ auto


def test_auto_class_weights_known_counts():
    # Binary: background 900, foreground 100 -> pos_weight sqrt(900/100) = 3; background keeps 1.
    assert auto_class_weights([900, 100], binary=True).tolist() == [1.0, 3.0]
    assert auto_class_weights([10**8, 1], binary=True).tolist() == [1.0, 10.0]  # sqrt(1e8) clipped to 10
    assert auto_class_weights([5, 0], binary=True).tolist() == [1.0, 1.0]  # nothing to weight
    # Multi-class: present counts (40000, 100, 100, 1), median 100 -> sqrt(100/40000) = 0.05 -> clipped 0.1,
    # sqrt(100/100) = 1, 1, class 3 has no pixels -> 1, sqrt(100/1) = 10.
    w = auto_class_weights([40000, 100, 100, 0, 1], binary=False)
    assert w.tolist() == pytest.approx([0.1, 1.0, 1.0, 1.0, 10.0])
    # (640, 160, 40, 10): median share of the 4 = (160 + 40) / 2 = 100 counts -> sqrt(100 / n).
    w = auto_class_weights([640, 160, 40, 10], binary=False)
    assert w.tolist() == pytest.approx([math.sqrt(100 / 640), math.sqrt(100 / 160), math.sqrt(100 / 40), math.sqrt(10)])


def test_choose_loss():
    assert choose_loss([0.988, 0.012], binary=True) == ("bce+dice", "foreground is 1.2 % of train pixels")
    assert choose_loss([700, 300], binary=True) == ("bce", "foreground is 30.0 % of train pixels (not rare)")
    just_below = AUTO_BINARY_RARE_SHARE * 0.99
    assert choose_loss([1 - just_below, just_below], binary=True)[0] == "bce+dice"
    assert choose_loss([0.5, 0.5], binary=True)[0] == "bce"
    shares = {"road": 0.6, "car": 0.395, "sign": 0.005, "absent": 0.0}
    spec, reason = choose_loss(shares, binary=False)
    assert spec == "ce+dice" and reason == "rarest class 'sign' is 0.5 % of train pixels"
    # The measured multi-class case the old 1 % line got wrong: rarest class at 1.2 % (CamVid, Fence) gets Dice.
    assert choose_loss({"road": 0.6, "car": 0.388, "fence": 0.012}, binary=False)[0] == "ce+dice"
    just_below = AUTO_MULTICLASS_RARE_SHARE * 0.99
    assert choose_loss([0.5, 0.5 - just_below, just_below], binary=False)[0] == "ce+dice"
    assert choose_loss([0.45, 0.44, 0.11], binary=False)[0] == "ce"
    # A class with no pixels at all is not 'the rarest'; the others are common -> plain CE.
    expected = ("ce", "rarest class 2 is 20.0 % of train pixels (not rare)")
    assert choose_loss([0.5, 0.3, 0.2, 0.0], binary=False) == expected
    assert choose_loss([0, 0], binary=True)[0] == "bce"


def test_build_loss_resolves_auto():
    cfg = TrainConfig()  # loss=auto is the default
    rare = build_loss(cfg, 1, IGN, pixel_counts=[988, 12])
    assert rare.spec == "bce+dice"
    assert rare.describe() == (
        "bce + dice; auto: foreground is 1.2 % of train pixels; pos_weight 9.07 (auto: inverse sqrt frequency)"
    )
    assert rare.class_weights.tolist() == pytest.approx([1.0, (988 / 12) ** 0.5])  # rare: pos_weight=auto too
    assert build_loss(TrainConfig(pos_weight=2.0), 1, IGN, pixel_counts=[988, 12]).class_weights.tolist() == [1, 2]
    balanced = build_loss(cfg, 1, IGN, pixel_counts=[700, 300])
    assert balanced.spec == "bce"  # today's loss for balanced data
    assert value(balanced, *binary_case()) == pytest.approx(BCE, rel=1e-6)
    assert build_loss(cfg, 1, IGN).spec == "bce"  # no counts: plain cross-entropy
    multi = build_loss(cfg, 3, IGN, pixel_counts=[9000, 995, 5], names=["bg", "car", "sign"])
    assert multi.describe() == "ce + dice; auto: rarest class 'sign' is 0.05 % of train pixels"
    # dice_weight from an older config keeps its meaning under loss=auto, whatever the counts say.
    assert build_loss(TrainConfig(dice_weight=0.5), 1, IGN, pixel_counts=[700, 300]).spec == "bce+dice:0.5"

    weighted = build_loss(TrainConfig(loss="bce", pos_weight="auto"), 1, IGN, pixel_counts=[900, 100])
    assert weighted.class_weights.tolist() == [1.0, 3.0]
    assert weighted.describe() == "bce; pos_weight 3 (auto: inverse sqrt frequency)"
    assert value(weighted, *binary_case()) == pytest.approx(
        value(SegmentationLoss(1, IGN, pos_weight=3.0), *binary_case()), rel=1e-6
    )
    by_class = build_loss(TrainConfig(loss="ce", class_weights="auto"), 3, IGN, pixel_counts=[640, 160, 40])
    assert by_class.class_weights.tolist() == pytest.approx([0.5, 1.0, 2.0])  # median 160: sqrt(160 / n)
    with pytest.raises(ConfigError, match="pixel counts"):
        build_loss(TrainConfig(class_weights="auto"), 3, IGN)
    with pytest.raises(ConfigError, match="3 classes"):
        build_loss(TrainConfig(class_weights=[1.0, 2.0]), 3, IGN)
    with pytest.raises(ConfigError, match="keep one"):
        build_loss(TrainConfig(class_weights="auto", pos_weight=2.0), 1, IGN, pixel_counts=[5, 5])


class _Masks:
    """The part of SegmentationDataset that count_class_pixels reads: spec, len and load(i)."""

    def __init__(self, masks: list[np.ndarray], names: list[str]) -> None:
        self.masks = masks
        self.spec = SimpleNamespace(names=names, ignore_index=IGN)

    def __len__(self) -> int:
        return len(self.masks)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(3, 2, 3, dtype=torch.uint8), torch.from_numpy(self.masks[i])


def test_count_class_pixels():
    masks = [
        np.array([[0, 0, 1], [2, IGN, 2]], np.uint8),
        np.array([[1, 1, 1], [0, IGN, IGN]], np.uint8),
    ]
    # class 0: 2 + 1, class 1: 1 + 3, class 2: 2 + 0; the three ignored pixels are not counted.
    assert count_class_pixels(_Masks(masks, ["a", "b", "c"])).tolist() == [3, 4, 2]


@pytest.mark.parametrize("rows_elements", [1 << 24, 1000])  # all classes in one sort / two classes per block
def test_lovasz_softmax_sorts_classes_in_blocks_with_the_per_class_value_and_gradient(monkeypatch, rows_elements):
    """The blocked sort is the definition computed class by class: same loss, same gradient."""
    from mobileseg.engine import lovasz

    def per_class(probs, target):
        losses = []
        for c in torch.unique(target).tolist():
            fg = (target == c).float()
            errors, order = torch.sort((fg - probs[:, c]).abs(), descending=True)
            losses.append(torch.dot(errors, lovasz._lovasz_grad(fg[order])))
        return torch.stack(losses).mean()

    monkeypatch.setattr(lovasz, "ROWS_ELEMENTS", rows_elements)
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(500, 5, generator=g).softmax(1).requires_grad_()
    target = torch.randint(0, 5, (500,), generator=g)
    target[target == 3] = 1  # a class absent from the batch is not averaged in
    got, want = lovasz.lovasz_softmax(probs, target), per_class(probs, target)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    (grad_got,), (grad_want,) = torch.autograd.grad(got, probs), torch.autograd.grad(want, probs)
    assert torch.allclose(grad_got, grad_want, atol=1e-7)
