"""Strict decoding (a JPEG cut short by an early end-of-image marker is an error, not a grey image) and the one
image -> RGB conversion shared by paths, PIL images and arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mobileseg.data import DataError, SegmentationDataset, check_dataset, load_image, resolve_dataset, to_rgb
from mobileseg.data.jpeg import jpeg_problem


def photo(h: int = 160, w: int = 192, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: a JPEG of it has a scan of several tens of kB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.dstack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)])
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def jpeg_bytes(arr: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def cut_scan(data: bytes) -> bytes:
    """Issue #18's corruption: 2000 bytes of the scan replaced, starting with an end-of-image marker."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big") + 300  # 300 bytes into the scan data
    assert len(data) > start + 4000, "the test image needs a longer scan"
    return data[:start] + b"\xff\xd9" + bytes(1998) + data[start + 2000 :]


@pytest.fixture
def corrupt_dataset(tmp_path: Path, make_pair) -> Path:
    for i in range(4):
        make_pair(tmp_path, f"ok{i}", image=photo(24, 32, seed=i), image_ext=".jpg", seed=i)
    img, _ = make_pair(tmp_path, "broken", image=photo(), mask=np.zeros((160, 192), np.uint8), image_ext=".jpg")
    img.write_bytes(cut_scan(img.read_bytes()))
    return tmp_path


def test_pillow_alone_decodes_the_cut_jpeg_as_grey(corrupt_dataset):
    # The premise of the check: no exception and no warning from Pillow, the lost blocks come out flat grey.
    with Image.open(corrupt_dataset / "images" / "broken.jpg") as im:
        arr = np.asarray(im.convert("RGB"))
    assert (arr[-16:] == 128).all()


def test_check_data_names_the_cut_jpeg(corrupt_dataset):
    report = check_dataset(resolve_dataset(str(corrupt_dataset)))
    assert not report.ok
    (err,) = report.errors  # the intact JPEGs pass
    assert "images/broken.jpg" in err and "early end-of-image marker" in err, err
    assert "FAILED" in report.format()


def test_training_and_prediction_decoding_refuse_the_cut_jpeg(corrupt_dataset):
    spec = resolve_dataset(str(corrupt_dataset), split_ratios=(1.0, 0.0, 0.0))
    ds = SegmentationDataset(spec, "train", (32, 32), cache="none")
    broken = next(i for i, s in enumerate(spec.splits["train"]) if s.stem == "broken")
    with pytest.raises(DataError, match=r"broken\.jpg.*early end-of-image marker"):
        ds[broken]
    for i in set(range(len(ds))) - {broken}:
        ds[i]  # the intact JPEGs still decode
    with pytest.raises(DataError, match=r"broken\.jpg"):
        load_image(corrupt_dataset / "images" / "broken.jpg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        to_rgb(str(corrupt_dataset / "images" / "broken.jpg"))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_refused_even_with_pillows_global_switch_on(tmp_path, monkeypatch, suffix):
    # PNG too: reading a PNG's EXIF (the orientation) decodes it, which must not happen before the strict decode.
    path = tmp_path / f"cut{suffix}"
    if suffix == ".jpg":
        data = jpeg_bytes(photo())
    else:
        buffer = io.BytesIO()
        Image.fromarray(photo()).save(buffer, format="PNG")
        data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library may have set it
    with pytest.raises(DataError, match=rf"cut\{suffix}.*truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was


def test_valid_jpeg_variants_pass_the_stream_check():
    arr = photo()
    plain = jpeg_bytes(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    variants = {
        "plain": plain,
        "progressive": jpeg_bytes(arr, progressive=True),
        "restart markers": jpeg_bytes(arr, restart_marker_blocks=4),
        "exif": jpeg_bytes(arr, exif=exif.tobytes()),
        "another image appended (MPO style)": plain + jpeg_bytes(arr[:32, :32]),
        "zero padding": plain + bytes(100),
        "repeated end marker": plain + b"\xff\xd9",
        "vendor trailer": plain + b"SEFH" + bytes(range(256)) + b"SEFT",
    }
    for name, data in variants.items():
        assert jpeg_problem(data) is None, name
    assert "early end-of-image" in (jpeg_problem(cut_scan(plain)) or "")
    assert "truncated" in (jpeg_problem(plain[:-2]) or "")
    assert "truncated" in (jpeg_problem(plain[:100]) or "")


# ------------------------------------------------------------------------------------------------- to_rgb


def test_16bit_grey_gives_the_same_rgb_by_path_image_and_array(tmp_path):
    grey = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)  # 0..65195
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really 16-bit on disk
        by_image = np.asarray(to_rgb(im))
    by_path = np.asarray(to_rgb(path))
    by_array = np.asarray(to_rgb(grey))
    by_chw = np.asarray(to_rgb(grey[None]))
    expected = np.clip(grey / 257 + 0.5, 0, 255).astype(np.uint8)
    for got in (by_path, by_image, by_array, by_chw):
        assert got.shape == (24, 32, 3)
        np.testing.assert_array_equal(got[..., 0], expected)
        np.testing.assert_array_equal(got[..., 0], got[..., 2])
    np.testing.assert_array_equal(np.asarray(load_image(path)), by_path)


def test_to_rgb_arrays_layouts_and_value_ranges():
    rgb = photo(8, 12)
    np.testing.assert_array_equal(np.asarray(to_rgb(rgb)), rgb)
    np.testing.assert_array_equal(np.asarray(to_rgb(rgb.transpose(2, 0, 1))), rgb)  # CHW
    np.testing.assert_array_equal(np.asarray(to_rgb(rgb / 255.0)), rgb)  # floats are 0..1
    rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    np.testing.assert_array_equal(np.asarray(to_rgb(rgba)), rgb)
    deep = rgb.astype(np.uint16) * 257
    np.testing.assert_array_equal(np.asarray(to_rgb(deep)), rgb)  # 16-bit colour scaled like 16-bit grey
    as_float_image = Image.fromarray(rgb[..., 0].astype(np.float32) / 255)  # PIL mode 'F': 0..1 like arrays
    np.testing.assert_array_equal(np.asarray(to_rgb(as_float_image))[..., 0], rgb[..., 0])
    with pytest.raises(DataError, match="shape"):
        to_rgb(np.zeros((2, 3, 4, 5), np.uint8))


def test_to_rgb_honours_exif_orientation_of_a_pil_image():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(photo(24, 32)).save(buf, "PNG", exif=exif.tobytes())
    with Image.open(buf) as im:
        assert to_rgb(im).size == (24, 32)
