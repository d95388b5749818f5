"""Any dataset a user brings: grey and multi-band (16-bit TIFF) inputs, masks that are scaled copies of their
images, a default ('*') entry in mask_values, and polygon labels converted from COCO / LabelMe: each trains,
predicts and exports to ONNX, plus the unit rules underneath (first-conv adaptation, 16-bit scaling, '*')."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

import mobileseg
from mobileseg.data import DataError, SegmentationDataset, check_dataset, decode_sample, resolve_dataset
from mobileseg.data.bands import read_bands, unit_tensor
from mobileseg.data.spec import parse_classes
from mobileseg.models import Segmenter
from mobileseg.models.encoder import adapt_first_conv
from mobileseg.models.segmenter import set_normalization

SIZE = 64
FAST = {"imgsz": SIZE, "batch": 4, "encoder_weights": "none", "width_mult": 0.35, "workers": 0, "verbose": False}


def scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(bright-rectangle indicator HxW bool, its 0/1 mask)."""
    y, x = rng.integers(0, size // 2, 2)
    h, w = rng.integers(size // 4, size // 2, 2)
    box = np.zeros((size, size), bool)
    box[y : y + h, x : x + w] = True
    return box, box.astype(np.uint8)


def make_folder(root: Path, n: int, write_image, mask_scale: int = 1, mask_fn=None) -> Path:
    """``images/`` + ``masks/`` with ``n`` pairs; ``write_image(path_stem, box, rng)`` writes the image."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        box, mask = scene(rng)
        write_image(root / "images" / f"p{i:02d}", box, rng)
        mask = mask_fn(mask, rng) if mask_fn else mask
        if mask_scale != 1:
            mask = np.asarray(Image.fromarray(mask).resize((SIZE * mask_scale,) * 2, Image.Resampling.NEAREST))
        Image.fromarray(mask).save(root / "masks" / f"p{i:02d}.png")
    return root


def grey_png(stem: Path, box: np.ndarray, rng: np.random.Generator) -> None:
    img = np.where(box, 200, rng.integers(0, 60, box.shape)).astype(np.uint8)
    Image.fromarray(img).save(stem.with_suffix(".png"))


def tiff16(stem: Path, box: np.ndarray, rng: np.random.Generator) -> None:
    """4 bands, 16-bit, planar (bands first, as remote-sensing tools write them); the box shows in band 3 only."""
    bands = rng.integers(0, 4000, (4, *box.shape)).astype(np.uint16)
    bands[3][box] = 60000
    tifffile.imwrite(stem.with_suffix(".tif"), bands, photometric="minisblack", planarconfig="separate")


def rgb_png(stem: Path, box: np.ndarray, rng: np.random.Generator) -> None:
    img = rng.integers(0, 60, (*box.shape, 3)).astype(np.uint8)
    img[box] = (200, 60, 60)
    Image.fromarray(img).save(stem.with_suffix(".png"))


def train_predict_export(tmp_path: Path, data: Path, channels: int = 3, **extra) -> tuple:
    """1 epoch, then predict one training image with best.pt and with its ONNX export, both read from disk."""
    run = mobileseg.train(
        data=str(data), epochs=1, channels=channels, project=str(tmp_path / "runs"), name="r", **FAST, **extra
    )
    model = Segmenter.from_checkpoint(run.best)
    assert model.in_channels == channels and model.mean.shape == (1, channels, 1, 1)
    root = data if data.is_dir() else data.parent
    source = sorted((root / "images").iterdir())[0]
    kw = {"source": str(source), "verbose": False, "threads": 1, "amp": False}  # fp32: .pt vs ONNX parity
    pt = mobileseg.predict(weights=str(run.best), out=str(tmp_path / "pt"), **kw)
    result = mobileseg.export(weights=str(run.best), format="onnx", verbose=False, threads=1)
    assert result.parity.ok and result.info.in_channels == channels
    import onnx
    import onnxruntime as ort

    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == channels  # the exported graph takes the model's bands
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.random.rand(1, channels, SIZE, SIZE).astype("f4")})
    assert out[0].shape[0] == 1 and out[0].shape[2:] == (SIZE, SIZE)
    onnx_run = mobileseg.predict(weights=str(result.path), out=str(tmp_path / "onnx"), **kw)
    a, b = pt.results[0], onnx_run.results[0]
    assert a.mask.shape == b.mask.shape == (SIZE, SIZE) and (a.mask != b.mask).mean() < 1e-3
    return run, model, a


# ------------------------------------------------------------------------------------------------- unit rules


def test_one_channel_model_equals_rgb_model_on_replicated_grey(one_thread):
    """Before any training, the adapted first conv (sum of the RGB kernels) makes a 1-channel model compute what
    its RGB twin computes for the same grey picture copied into R, G and B."""
    torch.manual_seed(0)
    rgb = Segmenter(num_classes=3, width_mult=0.35).eval()
    torch.manual_seed(0)
    grey = Segmenter(num_classes=3, width_mult=0.35, in_channels=1).eval()
    m, s = float(grey.mean.flatten()[0]), float(grey.std.flatten()[0])
    set_normalization(rgb, [m] * 3, [s] * 3)  # one statistic for all three copies of the grey band
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)
    assert grey.init_args["in_channels"] == 1
    w = torch.randn(8, 3, 3, 3)
    w4 = adapt_first_conv(w, 4)
    assert torch.allclose(w4[:, 3], w[:, 0] * 0.75) and torch.allclose(w4[:, :3], w * 0.75)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        grey(torch.rand(1, 3, SIZE, SIZE))


def test_checkpoint_without_in_channels_loads_as_rgb():
    ckpt = Segmenter(num_classes=1, width_mult=0.35, in_channels=4).to_checkpoint(imgsz=(SIZE, SIZE))
    assert Segmenter.from_checkpoint(ckpt).encoder.features[0][0].in_channels == 4
    old = Segmenter(num_classes=1, width_mult=0.35).to_checkpoint(imgsz=(SIZE, SIZE))
    old["model_args"].pop("in_channels")
    assert Segmenter.from_checkpoint(old).in_channels == 3


def test_uint16_and_8bit_grey_scale_to_unit_range(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", values)
    for name in ("g16.png", "g16.tif"):
        arr, _ = read_bands(tmp_path / name, 1)
        assert arr.dtype == np.uint16 and arr.shape == (1, 4, 1)
        assert torch.allclose(unit_tensor(arr)[0, 0], torch.tensor([0, 1 / 255, 32768 / 65535, 1.0]))
    Image.fromarray(np.array([[0, 1, 128, 255]], np.uint8)).save(tmp_path / "g8.png")
    assert torch.allclose(
        unit_tensor(read_bands(tmp_path / "g8.png", 1)[0])[0, 0], torch.tensor([0, 1, 128, 255]) / 255
    )


def test_channels_1_reads_grey_and_channels_3_keeps_converting_it_to_rgb(tmp_path):
    data = make_folder(tmp_path / "g", 4, grey_png)
    rgb = resolve_dataset(data)
    img, _ = decode_sample(rgb, rgb.splits["train"][0], (SIZE, SIZE))
    assert img.shape == (3, SIZE, SIZE) and img.dtype == np.uint8 and (img[0] == img[1]).all()
    grey = resolve_dataset(data, channels=1)
    ds = SegmentationDataset(grey, "train", (SIZE, SIZE), cache="ram")
    x, _ = ds[0]
    assert x.shape == (1, SIZE, SIZE) and torch.allclose(x[0], torch.from_numpy(img[0]).float() / 255)


def test_band_count_and_dtype_errors_name_the_file(tmp_path):
    data = make_folder(tmp_path / "t", 3, tiff16)
    report = check_dataset(resolve_dataset(data, channels=2))
    assert any("p00.tif has 4 band(s) but channels=2; set channels=4" in e for e in report.errors), report.errors
    tifffile.imwrite(data / "images" / "p01.tif", np.zeros((4, SIZE, SIZE), np.float32), planarconfig="separate")
    report = check_dataset(resolve_dataset(data, channels=4))
    assert any("p01.tif has float32 values" in e for e in report.errors), report.errors


def test_star_entry_maps_every_other_value():
    names, ignore, mapping, _ = parse_classes({"names": ["bg", "a", "rest"], "mask_values": {0: 0, 10: 1, "*": 2}}, "y")
    spec = resolve_dataset(None)
    spec.names, spec.ignore_index, spec.mask_values = names, ignore, mapping
    raw = np.array([[0, 10, 11, 77, 65535]], np.uint16)
    assert spec.encode_mask(raw).tolist() == [[0, 1, 2, 2, 2]]
    _, _, mapping, _ = parse_classes({"names": ["bg", "a"], "mask_values": {0: 0, 10: 1, "*": "ignore"}}, "y")
    spec.mask_values, spec._lut = mapping, None
    assert spec.encode_mask(raw).tolist() == [[0, 1, 255, 255, 255]]
    with pytest.raises(DataError, match=r"mask value '\*' -> 'nope'"):
        parse_classes({"names": ["bg", "a"], "mask_values": {"*": "nope"}}, "y")


def test_check_warns_when_a_class_has_no_train_pixels(tmp_path):
    """'c' (raw value 7) appears only in the val and test masks: the model could never learn it."""

    def values(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return mask * 5

    data = make_folder(tmp_path / "d", 6, rgb_png, mask_fn=values)
    Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(data / "masks" / "p05.png")
    (data / "splits").mkdir()
    (data / "splits" / "train.txt").write_text("p00\np01\np02\np03\n")
    (data / "splits" / "val.txt").write_text("p04\np05\n")
    doc = {"names": ["bg", "b", "c", "d"], "mask_values": {0: 0, 5: 1, 7: 2, "*": 3}}
    (data / "data.yaml").write_text(yaml.safe_dump(doc))
    report = check_dataset(resolve_dataset(data / "data.yaml"))
    assert report.ok, report.errors
    assert any("class 'c' has no pixels in the train split" in w for w in report.warnings), report.warnings
    assert any("class 'd' has no pixels in any mask" in w and "mask_values" in w for w in report.warnings)
    assert not any("'b'" in w for w in report.warnings)


def test_mask_size_mismatch_suggests_and_applies_mask_resize(tmp_path):
    data = make_folder(tmp_path / "m", 4, rgb_png, mask_scale=2)
    report = check_dataset(resolve_dataset(data))
    assert len(report.errors) == 4 and all("mask_resize: nearest" in e for e in report.errors), report.errors
    Image.fromarray(np.zeros((SIZE * 2, SIZE * 3), np.uint8)).save(data / "masks" / "p00.png")  # another shape
    report = check_dataset(resolve_dataset(data))
    bad = [e for e in report.errors if "p00" in e]
    assert bad and "size mismatch" in bad[0] and "mask_resize" not in bad[0]
    spec = resolve_dataset(data, mask_resize="nearest")
    report = check_dataset(spec)
    assert report.ok and any("stretches" in w and "p00" in w for w in report.warnings), report.warnings
    sample = next(s for s in spec.splits["train"] + spec.splits["val"] + spec.splits["test"] if s.stem == "p01")
    _, mask = decode_sample(spec, sample, (SIZE, SIZE))
    small = np.asarray(Image.open(sample.mask).resize((SIZE, SIZE), Image.Resampling.NEAREST))
    assert np.array_equal(mask, (small > 0).astype(np.uint8))


# -------------------------------------------------------------------------------------- train, predict, export


def test_grey_dataset_trains_predicts_exports(tmp_path, one_thread):
    data = make_folder(tmp_path / "grey", 10, grey_png)
    _, model, result = train_predict_export(tmp_path, data, channels=1)
    assert model.mean.flatten()[0] != pytest.approx(0.449, abs=1e-3)  # the train split's own statistic


def test_multiband_16bit_tiff_trains_predicts_exports(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("MOBILESEG_CACHE_DIR", str(tmp_path / "cache"))  # the disk cache stores uint16 bands
    data = make_folder(tmp_path / "tiff", 10, tiff16)
    _, model, result = train_predict_export(tmp_path, data, channels=4, cache="disk")
    assert float(model.mean.flatten()[3]) > float(model.mean.flatten()[0])  # band 3 holds the bright boxes
    assert result.probs.shape == (SIZE, SIZE)


def test_multiband_16bit_tiff_trains_on_native_crops(tmp_path, one_thread):
    """Crops at native size (and validation by sliding windows) read 4-band 16-bit TIFFs, which Pillow cannot
    open, and the normalisation statistics come out in [0, 1] as on the resize path, not in 16-bit units."""
    data = make_folder(tmp_path / "tiff", 10, tiff16)
    run = mobileseg.train(
        data=str(data), epochs=1, channels=4, train_scale=1, crop="32,32", project=str(tmp_path), name="c", **FAST
    )
    model = Segmenter.from_checkpoint(run.best)
    mean, std = model.mean.flatten(), model.std.flatten()
    assert bool((mean < 1).all() and (std < 1).all()), (mean, std)
    assert float(mean[3]) > float(mean[0])  # band 3 holds the bright boxes
    assert math.isfinite(run.history[-1]["val/iou"])  # validated by sliding windows over the native tiles


def test_native_tiles_of_16bit_bands_load_in_the_unit_range(tmp_path):
    """The slide-validation dataset's ``load`` (what the val pictures draw and predict) gives 16-bit bands in
    [0, 1] as the crop and resize datasets do, equal to what the model is fed (``dataset[i]``)."""
    from mobileseg.config import DataConfig
    from mobileseg.data import load_dataset
    from mobileseg.data.bands import unit
    from mobileseg.data.crops import NativeDataset

    data = make_folder(tmp_path / "tiff", 6, tiff16)
    spec = load_dataset(DataConfig(dataset=str(data), channels=4, split_ratios=[0.5, 0.5, 0.0]))
    native = NativeDataset(spec, "val")
    image = unit(native.load(0)[0])
    assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert torch.equal(image, native[0][0])


def test_crop_cache_budget_counts_the_bands(tmp_path, monkeypatch):
    """The crop dataset's RAM cache is sized by what it holds: 2 bytes per band (uint16) plus the mask byte for
    4-band images (9 bytes a pixel), not the 4 bytes of an RGB pixel and its mask."""
    from mobileseg.config import DataConfig
    from mobileseg.data import crops, load_dataset

    data = make_folder(tmp_path / "tiff", 6, tiff16)
    spec = load_dataset(DataConfig(dataset=str(data), channels=4, split_ratios=[1.0, 0.0, 0.0]))
    need = 9 * SIZE * SIZE * len(spec.splits["train"])  # native size: train_scale=1
    for budget, expected in ((4 * need, "ram"), (4 * need - 4, "none")):  # the cache may take a quarter
        monkeypatch.setattr(crops, "available_memory", lambda b=budget: b)
        ds = crops.CropDataset(spec, "train", crop=(32, 32), train_scale=1.0, cache="auto")
        assert ds.cache == expected, (budget, need)


@pytest.mark.parametrize("turn", range(1, 9))
def test_upright_equals_pillows_exif_transpose(tmp_path, turn):
    from PIL import ImageOps

    from mobileseg.data.bands import upright

    stored = np.arange(12, dtype=np.uint8).reshape(3, 4)
    exif = Image.Exif()
    exif[0x0112] = turn
    Image.fromarray(stored).save(tmp_path / "t.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "t.png")))
    np.testing.assert_array_equal(upright(stored, turn), expected)


def test_tiff_orientation_tag_uprights_bands_as_pillow_uprights_the_mask(tmp_path):
    """A multi-band TIFF stored sideways (Orientation 6) is uprighted as Pillow uprights its mask, so the pair
    stays aligned, and the size the crop path reads from the header is that of the pixels."""
    from mobileseg.data.crops import native_size
    from mobileseg.data.loading import read_mask
    from mobileseg.data.spec import Sample

    rng = np.random.default_rng(0)
    bands = rng.integers(0, 65535, (4, 20, 30), dtype=np.uint16)  # stored: 20 rows x 30 columns
    sideways = [(274, "H", 1, 6, True)]
    tifffile.imwrite(tmp_path / "a.tif", bands, photometric="minisblack", planarconfig="separate", extratags=sideways)
    drawn = (bands[0] > 32767).astype(np.uint8)  # labelled on the stored pixels, saved with the same tag
    tifffile.imwrite(tmp_path / "a_mask.tif", drawn, photometric="minisblack", extratags=sideways)
    arr, geometry = read_bands(tmp_path / "a.tif", 4)
    assert arr.shape == (30, 20, 4)
    np.testing.assert_array_equal(arr[..., 0], np.rot90(bands[0], -1))
    mask = read_mask(tmp_path / "a_mask.tif", geometry=geometry)
    np.testing.assert_array_equal(mask, (arr[..., 0] > 32767).astype(np.uint8))
    assert native_size(Sample("a", tmp_path / "a.tif", None)) == (30, 20)


def test_native_size_of_tiffs_pillow_cannot_open(tmp_path):
    """Crops and sliding windows read an image's size from its header; Pillow cannot open a TIFF of 5 or more
    bands, which tifffile reads (as for the pixels)."""
    from mobileseg.data.crops import native_size
    from mobileseg.data.spec import Sample

    path = tmp_path / "six.tif"
    tifffile.imwrite(path, np.zeros((6, 20, 30), np.uint16), photometric="minisblack", planarconfig="separate")
    assert native_size(Sample("six", path, None)) == (20, 30)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(DataError, match=r"unreadable image .*bad\.tif"):
        native_size(Sample("bad", tmp_path / "bad.tif", None))


def test_scaled_masks_train_with_mask_resize(tmp_path, one_thread):
    data = make_folder(tmp_path / "scaled", 10, rgb_png, mask_scale=2)
    with pytest.raises(DataError, match="mask_resize: nearest"):
        mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), name="x", **FAST)
    (data / "data.yaml").write_text("mask_resize: nearest\n")
    train_predict_export(tmp_path, data / "data.yaml")


def test_default_mapping_entry_trains_predicts_exports(tmp_path, one_thread):
    def raw_values(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.where(mask > 0, 40, 0).astype(np.uint8)
        out[:4] = rng.integers(100, 120)  # stray values: '*' sends them to class 'other'
        return out

    data = make_folder(tmp_path / "star", 10, rgb_png, mask_fn=raw_values)
    (data / "data.yaml").write_text(
        yaml.safe_dump({"names": ["bg", "box", "other"], "mask_values": {0: 0, 40: 1, "*": 2}})
    )
    _, model, result = train_predict_export(tmp_path, data / "data.yaml")
    assert model.num_classes == 3 and result.probs.shape == (3, SIZE, SIZE)


def test_coco_and_labelme_conversions_train_predict_export(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    images = tmp_path / "photos"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "box"}]}
    for i in range(10):
        box, _ = scene(rng)
        rgb_png(images / f"c{i}", box, rng)
        ys, xs = np.nonzero(box)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        poly = [x0, y0, x1, y0, x1, y1, x0, y1]
        coco["images"].append({"id": i, "file_name": f"c{i}.png", "width": SIZE, "height": SIZE})
        coco["annotations"].append(
            {"id": i, "image_id": i, "category_id": 1, "segmentation": [poly], "iscrowd": 0, "area": 1.0}
        )
        shape = {"label": "box", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "shape_type": "polygon"}
        doc = {"imagePath": f"c{i}.png", "imageData": None, "imageHeight": SIZE, "imageWidth": SIZE, "shapes": [shape]}
        (images / f"c{i}.json").write_text(json.dumps(doc))
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    for kind, labels in (("coco", tmp_path / "coco.json"), ("labelme", images)):
        out = tmp_path / kind
        yaml_path = mobileseg.convert(labels=str(labels), images=str(images), out=str(out), verbose=False)
        _, model, result = train_predict_export(tmp_path / f"run_{kind}", Path(yaml_path))
        assert model.names == ["background", "box"]
