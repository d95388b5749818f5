"""check_dataset / load_dataset: the summary, and every problem kind detected with its file named."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mobileseg.config import DataConfig
from mobileseg.data import DataError, check_dataset, load_dataset, resolve_dataset


def errors_about(report, word: str) -> list[str]:
    return [e for e in report.errors if word in e]


def test_clean_dataset_summary(tmp_path, make_pair):
    for i in range(10):
        mask = np.zeros((24, 32), np.uint8)
        mask[:, :8] = 255  # 25 % foreground
        make_pair(tmp_path, f"a{i}", mask=mask, seed=i)
    make_pair(tmp_path, "big", mask=np.zeros((40, 50), np.uint8))
    report = check_dataset(resolve_dataset(str(tmp_path)))
    assert report.ok and not report.errors, report.format()
    assert report.pairs == 11 and sum(report.counts.values()) == 11
    assert report.image_sizes == (32, 24, 50, 40)
    assert report.mask_values == {0: 10 * 24 * 24 + 2000, 255: 10 * 24 * 8}
    assert report.value_meaning == {0: "background", 255: "foreground"}
    share = report.class_share
    assert share["foreground"] == pytest.approx(1920 / (7680 + 2000))
    per_split = report.split_class_pixels  # the same counts, split by split (labels.png draws them)
    assert set(per_split) <= {"train", "val", "test"} and sum(report.counts[s] > 0 for s in per_split) == len(per_split)
    for name, total in report.class_pixels.items():
        assert sum(counts[name] for counts in per_split.values()) == total
    text = report.format()
    for words in ("11 pairs", "32..50 x 24..40", "255 -> foreground", "OK", "random"):
        assert words in text, text


def test_unpaired_files_are_named(binary_folder, make_pair):
    (binary_folder / "masks" / "im03.png").unlink()
    make_pair(binary_folder / "x", "orphan")
    (binary_folder / "x" / "masks" / "orphan.png").rename(binary_folder / "masks" / "orphan.png")
    report = check_dataset(resolve_dataset(str(binary_folder)))
    assert not report.ok
    assert any("images/im03.png" in e for e in errors_about(report, "image without mask"))
    assert any("masks/orphan.png" in e for e in errors_about(report, "mask without image"))


def test_unreadable_and_truncated_files_are_named(binary_folder, make_pair):
    (binary_folder / "images" / "im01.png").write_bytes(b"this is not a png")
    img, _ = make_pair(binary_folder, "trunc", image_ext=".jpg", image=np.full((64, 64, 3), 90, np.uint8))
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    mask = binary_folder / "masks" / "im02.png"
    mask.write_bytes(mask.read_bytes()[: len(mask.read_bytes()) * 6 // 10])  # cut inside the pixel data
    report = check_dataset(resolve_dataset(str(binary_folder)))
    unreadable = errors_about(report, "unreadable")
    assert any("images/im01.png" in e for e in unreadable), report.errors
    assert any("images/trunc.jpg" in e for e in unreadable), report.errors
    assert any("masks/im02.png" in e for e in unreadable), report.errors


def test_size_mismatch_is_named(binary_folder):
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(binary_folder / "masks" / "im05.png")
    report = check_dataset(resolve_dataset(str(binary_folder)))
    (err,) = errors_about(report, "size mismatch")
    assert "images/im05.png" in err and "masks/im05.png" in err and "32x24" in err and "10x10" in err


def test_unmapped_values_name_value_and_files(tmp_path, make_pair):
    good = np.array([[1, 2], [3, 2]], np.uint8)
    make_pair(tmp_path, "ok", mask=good)
    make_pair(tmp_path, "bad1", mask=np.array([[1, 7], [3, 2]], np.uint8))
    make_pair(tmp_path, "bad2", mask=np.array([[7, 7], [9, 2]], np.uint8))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"names": ["bg", "pet"], "mask_values": {1: 1, 2: 0, 3: 1}}))
    report = check_dataset(resolve_dataset(str(tmp_path / "d.yaml"), split_ratios=(1.0, 0.0, 0.0)))
    (seven,) = errors_about(report, "mask value 7")
    assert "masks/bad1.png" in seven and "masks/bad2.png" in seven and "masks/ok.png" not in seven
    (nine,) = errors_about(report, "mask value 9")
    assert "masks/bad2.png" in nine and "bad1" not in nine
    assert report.value_meaning[7] == "UNMAPPED" and "UNMAPPED" in report.format()


def test_unmatched_palette_colour_is_named(tmp_path, make_pair):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    make_pair(tmp_path, "a", mask=rgb)
    make_pair(tmp_path, "b", mask=np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"palette": [[0, 0, 0], [255, 0, 0]]}))
    report = check_dataset(resolve_dataset(str(tmp_path / "d.yaml"), split_ratios=(1.0, 0.0, 0.0)))
    (err,) = report.errors
    assert "(10, 20, 30)" in err and "masks/a.png" in err and "masks/b.png" not in err


def test_colour_mask_without_palette_is_an_error(tmp_path, make_pair):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    make_pair(tmp_path, "a", mask=rgb)
    make_pair(tmp_path, "grey", mask=np.stack([np.eye(4, dtype=np.uint8) * 255] * 3, -1))  # grey saved as RGB: fine
    report = check_dataset(resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0)))
    (err,) = report.errors
    assert "masks/a.png" in err and "palette" in err


def test_duplicate_stems_are_named(binary_folder, make_pair):
    make_pair(binary_folder, "im04", image_ext=".jpg")  # im04.png already exists
    report = check_dataset(resolve_dataset(str(binary_folder)))
    (err,) = errors_about(report, "duplicate")
    assert "images/im04.jpg" in err and "images/im04.png" in err


def test_list_stems_without_files_and_empty_split(binary_folder):
    (binary_folder / "splits").mkdir()
    (binary_folder / "splits" / "train.txt").write_text("im00\nim01\nghost_a\nghost_b\n")
    (binary_folder / "splits" / "val.txt").write_text("phantom\n")
    report = check_dataset(resolve_dataset(str(binary_folder)))
    (missing,) = errors_about(report, "splits/train.txt")
    assert "2 stems" in missing and "ghost_a" in missing and "ghost_b" in missing
    assert any("phantom" in e for e in errors_about(report, "splits/val.txt"))
    (empty,) = errors_about(report, "split 'val' is empty")
    assert "splits/val.txt" in empty
    assert report.counts == {"train": 2, "val": 0, "test": 0}


def test_empty_split_folder_and_leak_between_splits(tmp_path, make_pair):
    for i in range(3):
        make_pair(tmp_path, f"t{i}", sub="train", seed=i)
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "val" / "masks").mkdir(parents=True)
    make_pair(tmp_path, "t0", sub="test")
    report = check_dataset(resolve_dataset(str(tmp_path)))
    assert errors_about(report, "split 'val' is empty")
    (leak,) = errors_about(report, "in both")
    assert "'t0'" in leak and "train" in leak and "test" in leak


def test_missing_val_is_a_warning_not_an_error(tmp_path, make_pair):
    for i in range(3):
        make_pair(tmp_path, f"t{i}", sub="train", seed=i)
    report = check_dataset(resolve_dataset(str(tmp_path)))
    assert report.ok and any("no val split" in w for w in report.warnings)


def test_binary_default_warns_about_trimap_values(tmp_path, make_pair):
    for i in range(3):
        make_pair(tmp_path, f"p{i}", mask=np.array([[1, 2], [3, 2]], np.uint8))
    report = check_dataset(resolve_dataset(str(tmp_path)))
    assert report.ok
    assert any("binary default" in w and "[1, 2, 3]" in w for w in report.warnings)
    assert any("'background' has no pixels" in w for w in report.warnings)


def test_load_dataset_gives_the_trimap_warning_as_lines_to_print(tmp_path, make_pair):
    # Oxford pets trimaps (1 pet, 2 background, 3 border) without a mapping: the check passes, so load_dataset
    # does not raise; the warning must reach the trainer's output through warning_lines().
    for i in range(6):
        make_pair(tmp_path, f"p{i}", mask=np.array([[1, 2], [3, 2]], np.uint8), seed=i)
    spec = load_dataset(DataConfig(dataset=str(tmp_path)))
    lines = spec.warning_lines()
    assert lines == spec.report.warning_lines()
    (trimap,) = [line for line in lines if "everything is foreground" in line]
    assert trimap.startswith("WARNING: binary default") and "[1, 2, 3]" in trimap
    assert any("'background' has no pixels" in line for line in lines)
    assert all(line.startswith("WARNING: ") for line in lines)
    unchecked = load_dataset(DataConfig(dataset=str(tmp_path)), check=False)
    assert not [line for line in unchecked.warning_lines() if "foreground" in line]  # needs the pixel check


def test_jpeg_masks_warn(tmp_path, make_pair):
    for i in range(3):
        make_pair(tmp_path, f"j{i}", mask_ext=".jpg")
    report = check_dataset(resolve_dataset(str(tmp_path)))
    assert any("JPEG" in w and "masks/j0.jpg" in w for w in report.warnings)


def test_load_dataset_raises_with_the_report(binary_folder):
    cfg = DataConfig(dataset=str(binary_folder))
    assert load_dataset(cfg).report.ok
    (binary_folder / "masks" / "im07.png").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    assert "images/im07.png" in str(e.value) and "pairs" in str(e.value)
    assert load_dataset(cfg, check=False).report is None  # skipping the check raises nothing
