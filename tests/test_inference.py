"""Sliding-window inference, crops and TTA, checked against references written out here (small images, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mobileseg.data.crops import crop_origin, random_crop
from mobileseg.engine.inference import slide_classes, slide_image, slide_probs
from mobileseg.engine.inference_mode import InferenceSettings, from_record
from mobileseg.engine.predictor import Predictor
from mobileseg.models import Segmenter
from mobileseg.models.model_file import load_model


def small_net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1)).eval()


def hand_stitched(net: nn.Module, image: torch.Tensor, win: int, step: int) -> torch.Tensor:
    """The reference, written independently: windows every ``step`` pixels plus one flush with the far edge,
    each output times a Gaussian (sigma = win / 4) added into full-size sums, divided by the summed weights."""
    _, h, w = image.shape
    ys = sorted(set(list(range(0, h - win, step)) + [h - win]))
    xs = sorted(set(list(range(0, w - win, step)) + [w - win]))
    g = [math.exp(-((i - (win - 1) / 2) ** 2) / (2 * (win / 4) ** 2)) for i in range(win)]
    weight = torch.tensor([[a * b for b in g] for a in g], dtype=torch.float32)
    total = torch.zeros(3, h, w)
    norm = torch.zeros(h, w)
    with torch.no_grad():
        for y in ys:
            for x in xs:
                out = net(image[None, :, y : y + win, x : x + win])[0]
                total[:, y : y + win, x : x + win] += out * weight
                norm[y : y + win, x : x + win] += weight
    return total / norm


def test_slide_equals_a_hand_stitched_reference_on_an_odd_size():
    net = small_net()
    image = torch.rand(3, 90, 137)  # no side a multiple of the 64 window
    with torch.no_grad():
        got = slide_probs(net, image, (64, 64), overlap=0.25, blend="gaussian", batch=3)
    assert got.shape == (3, 90, 137)
    torch.testing.assert_close(got, hand_stitched(net, image, 64, 48), atol=1e-5, rtol=0)


def test_slide_pads_an_image_smaller_than_the_window():
    net = small_net()
    image = torch.rand(3, 40, 50)
    with torch.no_grad():
        got = slide_probs(net, image, (64, 64))
        padded = torch.zeros(3, 64, 64)
        padded[:, :40, :50] = image
        want = net(padded[None])[0, :, :40, :50]  # one window: the blend weights cancel
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_streaming_bands_give_the_full_path_s_class_map_on_a_large_image():
    model = Segmenter(num_classes=3, encoder_weights=None, width_mult=0.35).eval()
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 1000, 1300), dtype=np.uint8))
    with torch.inference_mode():
        full = slide_probs(model, image, (224, 224), overlap=0.25, batch=8).argmax(0).to(torch.uint8).numpy()
        streamed = slide_classes(model, image, (224, 224), lambda p: p.argmax(0), overlap=0.25, batch=8)
        probs, classes = slide_image(
            model, image, (224, 224), batch=8, to_classes=lambda p: p.argmax(0), stream_pixels=1
        )
    assert probs is None and classes.shape == (1000, 1300)
    np.testing.assert_array_equal(streamed, full)
    np.testing.assert_array_equal(classes, full)


def test_predictor_slide_at_original_size_and_tta_flip_ms_runs():
    ckpt = Segmenter(num_classes=2, encoder_weights=None, width_mult=0.35).to_checkpoint(imgsz=(64, 64))
    model, info, _ = load_model(ckpt)
    settings = InferenceSettings(infer="slide", window=(64, 64), train_scale=0.5, tta="flip+ms", tta_scales=(0.75, 1.0))
    p = Predictor(model, info, settings=settings)
    result = p.predict_image(np.random.default_rng(0).integers(0, 255, (150, 97, 3), dtype=np.uint8))
    assert result.mask.shape == (150, 97) and result.probs.shape == (2, 150, 97)
    resized = Predictor(model, info, tta="flip+ms").predict_image(np.zeros((50, 70, 3), np.uint8))
    assert resized.mask.shape == (50, 70)


@pytest.mark.parametrize(("channels", "dtype", "train_scale"), [(4, np.uint8, None), (1, np.uint16, 0.5)])
def test_slide_mode_reads_the_model_s_bands(channels, dtype, train_scale):
    """A multi-band or grey model slides over its own bands (read as Predictor.read does), not an RGB copy."""
    torch.manual_seed(0)
    net = Segmenter(num_classes=1, encoder_weights=None, width_mult=0.35, in_channels=channels).eval()
    model, info, _ = load_model(net.to_checkpoint(imgsz=(64, 64)))
    settings = InferenceSettings(infer="slide", window=(64, 64), train_scale=train_scale)
    p = Predictor(model, info, settings=settings)
    top = np.iinfo(dtype).max
    image = np.random.default_rng(0).integers(0, top, (90, 150, channels), dtype=dtype)
    result = p.predict_image(image)
    assert result.mask.shape == (90, 150) and result.probs.shape == (90, 150)
    if train_scale is None:  # the reference: the same windows over the bands in [0, 1], blended
        with torch.inference_mode():
            x = torch.from_numpy(image.astype(np.float32) / top).permute(2, 0, 1)
            expected = slide_probs(lambda w: model(w).sigmoid(), x, (64, 64), batch=settings.batch)[0]
        np.testing.assert_allclose(result.probs, expected.numpy(), atol=1e-6)
        np.testing.assert_array_equal(result.mask, (expected > 0.5).numpy())


def test_crop_has_the_crop_size_and_the_fg_bias_holds():
    rng = np.random.default_rng(0)
    mask = np.zeros((200, 300), np.uint8)
    mask[10:20, 250:260] = 2  # a rare class in one corner
    image = np.zeros((3, 200, 300), np.uint8)
    img, m = random_crop(image, mask, (64, 96), 0.5, 255, rng)
    assert img.shape == (3, 64, 96) and m.shape == (64, 96)
    small_img, small_mask = random_crop(image[:, :40, :50], mask[:40, :50], (64, 64), 0.5, 255, rng)
    assert small_img.shape == (3, 64, 64) and (small_mask[40:] == 255).all() and (small_mask[:, 50:] == 255).all()

    def hit_rate(fg: float) -> float:
        hits = 0
        for _ in range(400):
            y, x = crop_origin(mask, (64, 64), fg, 255, rng)
            hits += bool((mask[y : y + 64, x : x + 64] == 2).any())
        return hits / 400

    uniform = (64 / 200) * (64 / 300) * 1.6  # generous bound on a uniform crop's chance to touch the corner
    assert hit_rate(0.0) < uniform
    assert hit_rate(1.0) == 1.0
    assert 0.4 < hit_rate(0.5) < 0.75


@pytest.mark.parametrize("blend", ["linear", "mean"])
def test_other_blends_keep_a_single_window_exact(blend):
    net = small_net()
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(slide_probs(net, image, (64, 64), blend=blend), net(image[None])[0])


def test_train_on_crops_then_test_and_predict_slide(tmp_path):
    """A tiny run with crop= records slide mode; test and predict use it by default, at each image's size. The
    run's tta_scales are recorded too: tta=ms uses them unless others are given (files without them: the default)."""
    import json

    import yaml
    from helpers import FAST, make_shapes_dataset
    from PIL import Image

    import mobileseg
    from mobileseg.cli import main
    from mobileseg.models.checkpoint import load_checkpoint

    data = make_shapes_dataset(tmp_path / "shapes", n=10, size=100)
    fast = {**FAST, "imgsz": 96}
    run = mobileseg.train(
        data=str(data), epochs=1, crop="64,64", train_scale=1, tta_scales="0.5,1", project=str(tmp_path / "r"), **fast
    )
    ckpt = load_checkpoint(run.best)
    assert ckpt["inference"] == {
        "infer": "slide",
        "window": [64, 64],
        "overlap": 0.25,
        "blend": "gaussian",
        "train_scale": 1.0,
        "tta_scales": [0.5, 1.0],
    }
    assert ckpt["imgsz"] == [64, 64]
    assert yaml.safe_load((run.save_dir / "args.yaml").read_text())["predict"]["infer"] == "slide"
    assert "slide 64x64 windows" in (run.save_dir / "README.md").read_text()

    metrics = mobileseg.test(weights=str(run.best), project=str(tmp_path / "r"), **FAST)
    report = json.loads((Path(metrics["save_dir"]) / "metrics.json").read_text())
    assert report["inference"]["infer"] == "slide" and 0 <= metrics["iou"] <= 1
    for given, used in (({}, [0.5, 1.0]), ({"tta_scales": "0.75,1"}, [0.75, 1.0])):
        metrics = mobileseg.test(weights=str(run.best), project=str(tmp_path / "r"), tta="flip+ms", **given, **FAST)
        report = json.loads((Path(metrics["save_dir"]) / "metrics.json").read_text())
        assert report["inference"]["tta_scales"] == used and report["inference"]["tta"] == "flip+ms"
    old = {k: v for k, v in ckpt["inference"].items() if k != "tta_scales"}  # a file from before the record
    assert from_record(old).tta_scales == (0.75, 1.0, 1.25) == from_record(None).tta_scales

    out = tmp_path / "pred"
    main(["predict", f"weights={run.best}", f"source={data / 'images'}", f"out={out}", "tta=flip+ms", "verbose=false"])
    assert Image.open(out / "s00_mask.png").size == (100, 100)


def test_check_data_reports_sizes_and_suggests_crops_for_large_images(tmp_path):
    from helpers import make_shapes_dataset

    from mobileseg.data import check_dataset, resolve_dataset
    from mobileseg.data.crops import size_advice

    assert size_advice([(500, 400)] * 3, (224, 224)) == []  # under 4x the model's pixels: nothing to say
    report = check_dataset(resolve_dataset(str(make_shapes_dataset(tmp_path / "big", n=4, size=640))), imgsz=(64, 64))
    text = report.format()
    assert "median 640x640" in text and "throws away 99.0%" in text and "crop=128,128" in text


def test_resize_mode_tta_changes_the_evaluated_probabilities_as_predict_does():
    """val/test with tta= score the flip (and multi-scale) average, not the plain forward (it once ignored tta)."""
    from mobileseg.engine.inference import flip_average, resize_tta
    from mobileseg.engine.inference_mode import ResizeTTAModel

    torch.manual_seed(0)
    net = nn.Conv2d(3, 1, 5, padding=2)  # not mirror-symmetric: the flip changes its output
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        plain = torch.sigmoid(net(x))
        flip = ResizeTTAModel(net, InferenceSettings(tta="flip"), binary=True)
        expected = (plain + torch.sigmoid(net(x.flip(-1))).flip(-1)) / 2
        assert torch.allclose(torch.sigmoid(flip(x)), expected, atol=1e-5)
        assert not torch.allclose(torch.sigmoid(flip(x)), plain, atol=1e-3)
        both = ResizeTTAModel(net, InferenceSettings(tta="flip+ms", tta_scales=(0.5, 1.0)), binary=True)
        reference = resize_tta(flip_average(lambda t: torch.sigmoid(net(t))), x, (0.5, 1.0))
        assert torch.allclose(torch.sigmoid(both(x)), reference, atol=1e-5)


def test_multi_scale_tta_runs_each_distinct_size_once_and_warns_when_scales_collapse():
    """At 64 px, scales 0.75 and 1.25 round to 64 (multiples of 32): multi-scale TTA would silently be three
    identical passes. Each distinct size now runs once, weighted by how many scales gave it (the same average),
    and a warning names the sizes; at 224 px the three scales stay three sizes, without a warning."""
    import warnings

    from mobileseg.engine.inference import resize_tta

    torch.manual_seed(0)
    net = nn.Conv2d(3, 1, 3, padding=1)
    seen: list[tuple[int, int]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(t.shape[-2:]))
        return net(t)

    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        with pytest.warns(UserWarning, match=r"give 1 distinct input size\(s\) at 64x64 \(64x64;"):
            out = resize_tta(fn, x, (0.75, 1.0, 1.25))
        assert seen == [(64, 64)] and torch.allclose(out, net(x), atol=1e-6)
        seen.clear()
        x = torch.rand(1, 3, 64, 96)  # 0.5 -> 32x64 (twice, from 0.5 and 0.6), 1.0 -> 64x96
        with pytest.warns(UserWarning, match="give 2 distinct"):
            out = resize_tta(fn, x, (0.5, 0.6, 1.0))
        up = torch.nn.functional.interpolate
        small = up(net(up(x, size=(32, 64), mode="bilinear")), size=(64, 96), mode="bilinear")
        assert seen == [(32, 64), (64, 96)] and torch.allclose(out, (2 * small + net(x)) / 3, atol=1e-5)
        seen.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resize_tta(fn, torch.rand(1, 3, 224, 224), (0.75, 1.0, 1.25))
        assert seen == [(160, 160), (224, 224), (288, 288)]


def test_test_with_tta_uses_it(tmp_path):
    """`mobileseg test tta=flip` reports different figures from tta=none on the same checkpoint."""
    from helpers import FAST, make_shapes_dataset

    import mobileseg

    data = make_shapes_dataset(tmp_path / "shapes", n=8, size=64)
    run = mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "r"), **{**FAST, "imgsz": 64})
    plain = mobileseg.test(weights=str(run.best), project=str(tmp_path / "r"), name="a", **FAST)
    flip = mobileseg.test(weights=str(run.best), project=str(tmp_path / "r"), name="b", tta="flip", **FAST)
    assert plain["loss"] != flip["loss"]
