"""Decoding (image modes, 16-bit, EXIF), resizing, the SegmentationDataset outputs and its RAM/disk caches."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

import mobileseg.data.dataset as dsmod
from mobileseg.data import (
    DataError,
    SegmentationDataset,
    check_dataset,
    decode_sample,
    load_image,
    recommended_workers,
    resolve_dataset,
)
from mobileseg.data.spec import Sample


def rgb_quadrants(h: int = 24, w: int = 32) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 255)
    return img


# ----------------------------------------------------------------------------------------------- image modes


def test_odd_image_modes_load_as_rgb(tmp_path, save_image):
    rgb = rgb_quadrants()
    gif = save_image(Image.fromarray(rgb).convert("P"), tmp_path / "gif_named.jpg", format="GIF")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    png = save_image(rgba, tmp_path / "rgba_named.jpg", format="PNG")
    grey = save_image(np.full((24, 32), 77, np.uint8), tmp_path / "grey.png")
    sixteen = np.zeros((24, 32), np.uint16)
    sixteen[:, 16:] = 65535
    deep = save_image(Image.fromarray(sixteen), tmp_path / "deep.png")
    for path in (gif, png):
        im = load_image(path)
        assert im.mode == "RGB" and im.size == (32, 24)
        assert np.abs(np.asarray(im).astype(int) - rgb).max() <= 1
    assert np.asarray(load_image(grey)).tolist() == np.full((24, 32, 3), 77).tolist()
    arr = np.asarray(load_image(deep))
    assert Image.open(deep).mode.startswith("I")  # really 16-bit on disk
    assert arr[:, :16].max() == 0 and arr[:, 16:].min() == 255  # scaled from 16 bits, not clipped


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="bad.jpg"):
        load_image(bad)
    with pytest.raises(DataError, match="missing.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda m: Image.fromarray(m.astype(bool)), [0, 1]),  # mode '1'
        (lambda m: Image.fromarray(m.astype(np.uint16) * 1000), [0, 1]),  # 16-bit
        (lambda m: Image.fromarray(np.dstack([m * 255, m * 255])), [0, 1]),  # LA
        (lambda m: _palette_image(m), [0, 1]),  # P: palette indices, not colours
    ],
)
def test_mask_modes(tmp_path, save_image, make, expected):
    m = np.zeros((24, 32), np.uint8)
    m[:, 16:] = 1
    save_image(np.zeros((24, 32, 3), np.uint8), tmp_path / "images" / "a.png")
    save_image(make(m), tmp_path / "masks" / "a.png")
    spec = resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0))
    assert check_dataset(spec).ok
    _, mask = decode_sample(spec, spec.splits["train"][0], (24, 32))
    assert sorted(np.unique(mask).tolist()) == expected
    assert (mask[:, 16:] == 1).all() and (mask[:, :16] == 0).all()


def _palette_image(m: np.ndarray) -> Image.Image:
    im = Image.fromarray(m)  # L; putpalette turns it into P with the same pixel values as indices
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    return im


def test_16bit_mask_with_mapping(tmp_path, make_pair):
    raw = np.zeros((24, 32), np.uint16)
    raw[:, 10:20] = 1000
    raw[:, 20:] = 40000
    make_pair(tmp_path, "a", mask=raw)
    doc = {"names": ["bg", "a", "b"], "mask_values": {0: 0, 1000: 1, 40000: "ignore"}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    spec = resolve_dataset(str(tmp_path / "d.yaml"), split_ratios=(1.0, 0.0, 0.0))
    report = check_dataset(spec)
    assert report.ok and set(report.mask_values) == {0, 1000, 40000}
    _, mask = decode_sample(spec, spec.splits["train"][0], (24, 32))
    assert mask[0, 0] == 0 and mask[0, 15] == 1 and mask[0, 25] == 255


# ------------------------------------------------------------------------------------------------------ EXIF


def _exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


@pytest.mark.parametrize("ext", ["jpg", "tif"])
@pytest.mark.parametrize("mask_drawn_on", ["displayed", "raw", "raw_with_own_exif"])
def test_exif_rotation_keeps_image_and_mask_together(tmp_path, save_image, mask_drawn_on, ext):
    # Stored pixels: 40 wide x 20 high, left half red. EXIF 6 = show rotated 90 degrees clockwise, so the
    # displayed picture is 20 wide x 40 high with the red half on top. A TIFF keeps it as its Orientation tag,
    # which Pillow applies itself on load (and reports the size of already turned).
    from mobileseg.data.crops import native_size

    raw = np.zeros((20, 40, 3), np.uint8)
    raw[:, :20] = (255, 0, 0)
    raw[:, 20:] = (0, 0, 255)
    save_image(raw, tmp_path / "images" / f"r.{ext}", exif=_exif(6), quality=95)
    if mask_drawn_on == "displayed":
        mask = np.zeros((40, 20), np.uint8)
        mask[:20] = 255
        save_image(mask, tmp_path / "masks" / "r.png")
    else:
        mask = np.zeros((20, 40), np.uint8)
        mask[:, :20] = 255
        kwargs = {"exif": _exif(6)} if mask_drawn_on == "raw_with_own_exif" else {}
        save_image(mask, tmp_path / "masks" / "r.png", **kwargs)
    im = load_image(tmp_path / "images" / f"r.{ext}")
    assert im.size == (20, 40)
    top = np.asarray(im)[:20].astype(int)
    assert top[..., 0].mean() > 200 and top[..., 2].mean() < 50  # red on top: rotated
    spec = resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0))
    report = check_dataset(spec)
    assert report.ok, report.errors
    assert report.image_sizes == (20, 40, 20, 40)
    assert native_size(spec.splits["train"][0]) == (40, 20)  # (H, W) as displayed: what crops and windows use
    img, m = decode_sample(spec, spec.splits["train"][0], (32, 32))
    red_rows = img[0].astype(int).mean(axis=1) > 128
    assert red_rows[:14].all() and not red_rows[18:].any()
    assert (m[:14] == 1).all() and (m[18:] == 0).all()


def test_png_orientation_is_read_without_decoding_unless_its_exif_comes_late(tmp_path, monkeypatch):
    """Sizing a PNG (crops, sliding windows, the crop cache) reads its header only: Pillow's getexif() would
    decode the whole file to look for an eXIf chunk after the pixels. A PNG that has such a late chunk still
    gets its orientation, the same as when it is decoded."""
    import zlib

    from PIL import PngImagePlugin

    from mobileseg.data.loading import decode_file, image_geometry

    stored = np.zeros((20, 40), np.uint8)
    Image.fromarray(stored).save(tmp_path / "plain.png")
    Image.fromarray(stored).save(tmp_path / "early.png", exif=_exif(6))
    data = (tmp_path / "plain.png").read_bytes()
    body = _exif(6)
    body = body[6:] if body.startswith(b"Exif\x00\x00") else body
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body + zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    iend = data.rindex(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(data[:iend] + chunk + data[iend:])
    expected = {"plain": 1, "early": 6, "late": 6}
    for name, turn in expected.items():
        assert decode_file(tmp_path / f"{name}.png")[1] == ((40, 20), turn), name
    real_load = PngImagePlugin.PngImageFile.load
    decoded = []

    def counting_load(self):
        decoded.append(self.tile != [])
        return real_load(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counting_load)
    for name, turn in expected.items():
        decoded.clear()
        assert image_geometry(tmp_path / f"{name}.png") == ((40, 20), turn), name
        assert any(decoded) == (name == "late"), name  # only the late chunk needs the pixels decoded


def test_square_images_resize_antialiased_and_masks_nearest(tmp_path, make_pair):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: point sampling would give 0 or 255, averaging gives ~128
    mask = np.zeros((64, 64), np.uint8)
    mask[:, ::2] = 255
    make_pair(tmp_path, "s", mask=mask, image=stripes)
    spec = resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0))
    img, m = decode_sample(spec, spec.splits["train"][0], (32, 32))
    assert img.shape == (3, 32, 32) and img.dtype == np.uint8
    assert 100 < img.mean() < 155 and img.std() < 20
    assert set(np.unique(m).tolist()) <= {0, 1} and m.dtype == np.uint8


# --------------------------------------------------------------------------------------------- the dataset


@pytest.fixture
def small_spec(tmp_path, make_pair):
    root = tmp_path / "ds"
    for i in range(6):
        mask = np.zeros((30, 40), np.uint8)
        mask[5 + i : 20, 3 : 30 - i] = 255
        make_pair(root, f"p{i}", mask=mask, image_ext=".jpg", seed=i)
    return resolve_dataset(str(root), split_ratios=(1.0, 0.0, 0.0))


def test_getitem_gives_float_image_and_long_mask(small_spec):
    ds = SegmentationDataset(small_spec, "train", (32, 64), cache="none")
    assert len(ds) == 6 and ds.samples == small_spec.splits["train"]
    img, mask = ds[0]
    assert img.shape == (3, 32, 64) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5  # [0, 1], not normalised
    assert mask.shape == (32, 64) and mask.dtype == torch.int64
    u8_img, u8_mask = ds.load(0)
    assert u8_img.dtype == torch.uint8 and u8_mask.dtype == torch.uint8
    assert torch.equal(img, u8_img.float() / 255) and torch.equal(mask, u8_mask.long())
    with pytest.raises(DataError, match="no split 'holdout'"):
        SegmentationDataset(small_spec, "holdout", (32, 32))


@pytest.mark.parametrize("cache", ["ram", "disk", "auto"])
def test_cache_returns_the_same_tensors_as_a_fresh_decode(small_spec, tmp_path, cache, monkeypatch):
    fresh = [decode_sample(small_spec, s, (32, 32)) for s in small_spec.splits["train"]]
    ds = SegmentationDataset(small_spec, "train", (32, 32), cache=cache, cache_dir=tmp_path / "c")
    assert ds.cache in ("ram", "disk")
    assert ds.prefill() == 6 and ds.prefill() == 0

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(dsmod, "decode_sample", no_decode)
    for i, (img, mask) in enumerate(fresh):
        a, b = ds.load(i)
        assert np.array_equal(a.numpy(), img) and np.array_equal(b.numpy(), mask)
        a[:] = 0  # load() hands out copies: the cache is unharmed
        assert np.array_equal(ds.load(i)[0].numpy(), img)
    if ds.cache == "disk":  # a new process (here: a new dataset) reads the .npy files, decoding nothing
        again = SegmentationDataset(small_spec, "train", (32, 32), cache="disk", cache_dir=tmp_path / "c")
        assert np.array_equal(again.load(3)[1].numpy(), fresh[3][1])
        files = list((tmp_path / "c").rglob("*"))
        assert len([f for f in files if f.suffix == ".npy"]) == 6
        assert not [f for f in files if f.name.endswith(".tmp")]


def test_disk_cache_key_follows_file_changes_and_imgsz(small_spec, tmp_path):
    ds = SegmentationDataset(small_spec, "train", (32, 32), cache="disk", cache_dir=tmp_path / "c")
    ds.prefill()
    smp = small_spec.splits["train"][0]
    Image.fromarray(np.full((30, 40), 255, np.uint8)).save(smp.mask)
    st = os.stat(smp.mask)
    os.utime(smp.mask, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    fresh = SegmentationDataset(small_spec, "train", (32, 32), cache="disk", cache_dir=tmp_path / "c")
    assert fresh.load(0)[1].min() == 1  # the edited mask, not the stale cache
    other = SegmentationDataset(small_spec, "train", (64, 32), cache="disk", cache_dir=tmp_path / "c")
    assert other.load(0)[0].shape == (3, 64, 32)


def test_ram_cache_survives_pickling_and_workers(small_spec):
    ds = SegmentationDataset(small_spec, "train", (32, 32), cache="ram")
    ds.prefill()
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert clone.prefill() == 0 and torch.equal(clone.load(2)[0], ds.load(2)[0])
    plain = list(DataLoader(ds, batch_size=3))
    workers = list(DataLoader(ds, batch_size=3, num_workers=1))
    for (a, b), (c, d) in zip(plain, workers, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_auto_cache_falls_back_to_disk_when_memory_is_short(small_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod, "available_memory", lambda: 1000)
    ds = SegmentationDataset(small_spec, "train", (32, 32), cache="auto", cache_dir=tmp_path / "c")
    assert ds.cache == "disk"
    with pytest.raises(ValueError, match="cache must be"):
        SegmentationDataset(small_spec, "train", (32, 32), cache="gpu")


def test_unlabelled_sample_is_all_ignore(small_spec):
    s = small_spec.splits["train"][0]
    small_spec.splits["test"] = [Sample(s.stem, s.image, None)]
    _, mask = SegmentationDataset(small_spec, "test", (32, 32), cache="none")[0]
    assert (mask == 255).all()


def test_recommended_workers_follows_cores_and_cache(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert recommended_workers("ram") == 0 and recommended_workers("auto") == 0
    assert recommended_workers("none") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert recommended_workers("none") == 8 and 1 <= recommended_workers("ram") <= 4
