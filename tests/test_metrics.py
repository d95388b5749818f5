"""Metrics equal a hand-computed confusion matrix; ignore pixels never count; the loss skips them too."""

import math

import pytest
import torch

from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.metrics import ConfusionMatrix, image_iou, logits_to_pred


def test_binary_metrics_match_hand_computed_counts():
    target = torch.tensor([[1, 1, 1, 0], [0, 0, 255, 1]])
    pred = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 1]])
    # valid pixels: 7; tp=3 (fg predicted fg), fn=1, fp=1, tn=2
    cm = ConfusionMatrix(2)
    cm.update(target, pred)
    assert cm.mat.tolist() == [[2, 1], [1, 3]]
    m = cm.compute()
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["dice"] == pytest.approx(6 / 8)


def test_multiclass_macro_mean_and_per_class():
    target = torch.tensor([0, 0, 1, 1, 2, 2, 255, 255])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 2, 0])
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    per = cm.per_class()
    # class 0: tp1 fp1 fn1 -> 1/3; class 1: tp2 fp1 fn0 -> 2/3; class 2: tp1 fp0 fn1 -> 1/2
    assert per["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert per["support"] == [2, 2, 2]
    assert cm.compute()["iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.compute()["accuracy"] == pytest.approx(4 / 6)


def test_accumulation_is_exact_over_batches_not_mean_of_batches():
    a_t, a_p = torch.ones(100, dtype=torch.long), torch.ones(100, dtype=torch.long)  # perfect, big
    b_t, b_p = torch.tensor([1, 1]), torch.tensor([0, 0])  # all wrong, small
    cm = ConfusionMatrix(2)
    cm.update(a_t, a_p)
    cm.update(b_t, b_p)
    assert cm.compute()["iou"] == pytest.approx(100 / 102)  # the batch-mean would be 0.5


def test_ignore_pixels_never_count():
    target = torch.full((4, 4), 255)
    target[0, 0] = 1
    pred_a = torch.zeros(4, 4, dtype=torch.long)
    pred_b = torch.ones(4, 4, dtype=torch.long)
    for pred in (pred_a, pred_b):
        cm = ConfusionMatrix(2)
        cm.update(target, pred)
        assert cm.mat.sum() == 1
    loss = SegmentationLoss(1)
    logits = torch.zeros(1, 1, 4, 4)
    base = loss(logits, target[None])
    logits2 = logits.clone()
    logits2[0, 0, 1:, :] = 50.0  # change only ignored pixels
    assert loss(logits2, target[None]).item() == pytest.approx(base.item())
    ce = SegmentationLoss(3, dice_weight=0.5)
    mlogits = torch.randn(1, 3, 4, 4)
    mt = target.clone()[None]
    a = ce(mlogits, mt).item()
    mlogits[0, :, 2:, :] += 10 * torch.randn(3, 2, 4)
    assert ce(mlogits, mt).item() == pytest.approx(a, rel=1e-5)


def test_logits_to_pred_threshold_and_argmax():
    binary = torch.tensor([[[[-1.0, 0.1]]]])
    assert logits_to_pred(binary).tolist() == [[[0, 1]]]
    assert logits_to_pred(binary, threshold=0.6).tolist() == [[[0, 0]]]
    multi = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])
    assert logits_to_pred(multi).tolist() == [[[1]]]


def test_image_iou_empty_image_scores_one():
    t = torch.zeros(3, 3, dtype=torch.long)
    assert image_iou(t, t, 2) == 1.0
    p = t.clone()
    p[0, 0] = 1
    assert image_iou(t, p, 2) == 0.0
    assert not math.isnan(image_iou(t, p, 3))


def test_bce_pos_weight_and_class_weights_validate():
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationLoss(3, class_weights=[1.0, 2.0])
    t = torch.ones(1, 2, 2, dtype=torch.long)
    logits = torch.zeros(1, 1, 2, 2)
    assert SegmentationLoss(1, pos_weight=3.0)(logits, t) > SegmentationLoss(1)(logits, t)
