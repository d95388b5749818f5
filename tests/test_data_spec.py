"""Resolving datasets: pairing, the three split modes, dataset YAMLs, mask mappings, presets, bundled sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobileseg.config import DataConfig
from mobileseg.data import DataError, load_dataset, preset_names, resolve_dataset, sample_root


def stems(spec, split: str) -> list[str]:
    return [s.stem for s in spec.splits[split]]


# ------------------------------------------------------------------------------------------------- pairing


def test_pairs_by_stem_across_extensions(tmp_path, make_pair):
    exts = [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".JPG"]
    for i, ext in enumerate(exts):
        make_pair(tmp_path, f"s{i}", image_ext=ext, mask_ext=".png" if i % 2 else ".bmp")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / ".hidden.png").write_bytes(b"")
    spec = resolve_dataset(str(tmp_path), split_ratios=(1.0, 0.0, 0.0))
    assert sorted(stems(spec, "train")) == [f"s{i}" for i in range(len(exts))]
    assert {s.image.suffix for s in spec.splits["train"]} == set(exts)
    assert all(s.mask is not None and s.mask.stem == s.stem for s in spec.splits["train"])
    assert not [m for level, m in spec.issues if level == "error"]


# -------------------------------------------------------------------------------------------- split modes


def test_random_split_is_seeded_reproducible_and_recorded(binary_folder):
    a = resolve_dataset(str(binary_folder), split_ratios=(0.8, 0.1, 0.1), split_seed=3)
    b = resolve_dataset(str(binary_folder), split_ratios=(0.8, 0.1, 0.1), split_seed=3)
    c = resolve_dataset(str(binary_folder), split_ratios=(0.8, 0.1, 0.1), split_seed=4)
    assert [len(a.splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert a.split_info["mode"] == "random"
    assert a.split_info["seed"] == 3 and a.split_info["ratios"] == [0.8, 0.1, 0.1]
    assert a.split_info["stems"] == b.split_info["stems"]
    assert a.split_info["stems"] != c.split_info["stems"]
    assert {s: stems(a, s) for s in ("train", "val", "test")} == a.split_info["stems"]
    every = sum(a.split_info["stems"].values(), [])
    assert sorted(every) == sorted(set(every)) and len(every) == 20
    yaml.safe_dump(a.split_info)  # the trainer writes it into args.yaml


def test_recorded_split_is_reused_exactly(binary_folder, make_pair):
    first = resolve_dataset(str(binary_folder), split_seed=1)
    for i in range(5):  # new files would reshuffle a fresh random split
        make_pair(binary_folder, f"new{i}", seed=100 + i)
    again = resolve_dataset(str(binary_folder), split_seed=1, stems=first.split_info["stems"])
    assert again.split_info["mode"] == "recorded"
    assert {s: stems(again, s) for s in ("train", "val", "test")} == first.split_info["stems"]


def test_default_ratios_and_tiny_folder(tmp_path, make_pair):
    for i in range(4):
        make_pair(tmp_path, f"t{i}", seed=i)
    spec = resolve_dataset(str(tmp_path))
    counts = [len(spec.splits[s]) for s in ("train", "val", "test")]
    assert sum(counts) == 4 and counts[0] >= 1 and counts[1] >= 1  # a val split even when 10 % rounds to 0


def test_list_files_in_splits_folder_are_found_without_yaml(binary_folder):
    (binary_folder / "splits").mkdir()
    (binary_folder / "splits" / "train.txt").write_text("\n".join(f"im{i:02d}" for i in range(12)) + "\n")
    (binary_folder / "splits" / "val.txt").write_text("im12\nim13.png\n# comment\n\nimages/im14.jpg\n")
    (binary_folder / "splits" / "test.txt").write_text("\n".join(f"im{i:02d}" for i in range(15, 20)))
    spec = resolve_dataset(str(binary_folder))
    assert spec.split_info["mode"] == "lists"
    assert stems(spec, "val") == ["im12", "im13", "im14"]  # extensions and folders stripped, order kept
    assert len(spec.splits["train"]) == 12 and len(spec.splits["test"]) == 5
    assert spec.split_info["lists"]["val"] == ["splits/val.txt"]


def test_yaml_maps_several_list_files_and_bare_names(binary_folder):
    (binary_folder / "splits").mkdir()
    (binary_folder / "splits" / "part_a.txt").write_text("im00\nim01\n")
    (binary_folder / "splits" / "part_b.txt").write_text("im02\nim01\n")  # duplicate entry counted once
    (binary_folder / "splits" / "held_out.txt").write_text("im03\n")
    (binary_folder / "other.txt").write_text("im04\n")
    cfg = {"splits": {"train": ["splits/part_a.txt", "part_b"], "val": "other.txt", "test": "held_out"}}
    (binary_folder / "data.yaml").write_text(yaml.safe_dump(cfg))
    spec = resolve_dataset(str(binary_folder / "data.yaml"))
    assert stems(spec, "train") == ["im00", "im01", "im02"]
    assert stems(spec, "val") == ["im04"] and stems(spec, "test") == ["im03"]
    warn = [m for level, m in spec.issues if level == "warning"]
    assert any("in no split list" in m and "im05" in m for m in warn)


def test_split_folders(tmp_path, make_pair):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for i in range(n):
            make_pair(tmp_path, f"{split}{i}", sub=split, seed=i)
    spec = resolve_dataset(str(tmp_path))
    assert spec.split_info["mode"] == "folders"
    assert [len(spec.splits[s]) for s in ("train", "val", "test")] == [6, 2, 3]
    assert all(s.image.parent == tmp_path / "val" / "images" for s in spec.splits["val"])


def test_lists_take_precedence_over_folders_and_folders_over_random(tmp_path, make_pair):
    for split in ("train", "val"):
        for i in range(3):
            make_pair(tmp_path, f"{split}{i}", sub=split, seed=i)
    assert resolve_dataset(str(tmp_path)).split_info["mode"] == "folders"
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("train0\nval0\n")
    (tmp_path / "splits" / "val.txt").write_text("train1\n")
    spec = resolve_dataset(str(tmp_path))
    assert spec.split_info["mode"] == "lists"
    assert stems(spec, "train") == ["train0", "val0"] and stems(spec, "val") == ["train1"]


def lists_yaml(folder: Path, **extra) -> str:
    """A dataset YAML over ``folder`` with train (im00-im15) and test (im16-im19) lists, plus ``extra`` keys."""
    (folder / "splits").mkdir(exist_ok=True)
    (folder / "splits" / "tr.txt").write_text("\n".join(f"im{i:02d}" for i in range(16)))
    (folder / "splits" / "te.txt").write_text("\n".join(f"im{i:02d}" for i in range(16, 20)))
    doc = {"splits": {"train": "splits/tr.txt", "test": "splits/te.txt"}, **extra}
    (folder / "d.yaml").write_text(yaml.safe_dump(doc))
    return str(folder / "d.yaml")


def test_val_fraction_carves_seeded_val_from_train(binary_folder):
    data = lists_yaml(binary_folder, val_fraction=0.25)
    a = resolve_dataset(data, split_seed=0)
    b = resolve_dataset(data, split_seed=0)
    c = resolve_dataset(data, split_seed=9)
    assert len(a.splits["val"]) == 4 and len(a.splits["train"]) == 12 and len(a.splits["test"]) == 4
    assert not set(stems(a, "train")) & set(stems(a, "val"))
    assert set(stems(a, "val")) <= {f"im{i:02d}" for i in range(16)}
    assert a.split_info["stems"] == b.split_info["stems"] != c.split_info["stems"]
    assert a.split_info["val_fraction"] == 0.25


def test_val_fraction_applies_to_split_folders_without_val(tmp_path, make_pair):
    for i in range(10):
        make_pair(tmp_path, f"a{i}", sub="train", seed=i)
    (tmp_path / "data.yaml").write_text("val_fraction: 0.2\n")
    spec = resolve_dataset(str(tmp_path))  # a folder holding data.yaml uses it
    assert spec.split_info["mode"] == "folders"
    assert len(spec.splits["val"]) == 2 and len(spec.splits["train"]) == 8


# --------------------------------------------------------------------------------------- YAML and mappings


def test_yaml_path_resolves_against_yaml_folder_and_names_dict(tmp_path, make_pair):
    data = tmp_path / "data" / "set"
    for i in range(5):
        make_pair(data, f"x{i}", seed=i)
    cfgdir = tmp_path / "configs"
    cfgdir.mkdir()
    doc = {
        "path": "../data/set",
        "names": {1: "cat", 0: "bg", 2: "dog"},
        "mask_values": {0: 0, "255": "dog", 128: 1, 7: "ignore", 9: None},
        "ignore_index": 250,
    }
    (cfgdir / "pets.yaml").write_text(yaml.safe_dump(doc))
    spec = resolve_dataset(str(cfgdir / "pets.yaml"))
    assert spec.root == data.resolve()
    assert spec.names == ["bg", "cat", "dog"] and spec.num_classes == 3 and not spec.binary
    assert spec.mask_values == {0: 0, 255: 2, 128: 1, 7: None, 9: None}
    raw = np.array([[0, 255, 128, 7, 9]], np.uint8)
    assert spec.encode_mask(raw).tolist() == [[0, 2, 1, 250, 250]]
    assert str(cfgdir / "pets.yaml") in spec.source


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"names": ["a", "b"], "mask_values": {1: 5}}, "class indices [5]"),
        ({"names": ["a", "b"], "ignore_index": 1}, "collides"),
        ({"colour": 1}, "unknown keys"),
        ({"mask_values": {1: "dog"}, "names": ["bg", "cat"]}, "not a class index"),
        ({"names": {0: "a", 2: "b"}}, "without gaps"),
        ({"palette": [[0, 0, 0], [300, 0, 0]]}, "0..255"),
        ({"splits": {"train": "nope.txt"}}, "nope.txt"),
        ({"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_yaml_is_a_clear_error(binary_folder, doc, words):
    (binary_folder / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="bad.yaml") as e:
        resolve_dataset(str(binary_folder / "bad.yaml"))
    assert words in str(e.value)


def test_missing_dataset_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        resolve_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found in .*empty"):
        resolve_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="oxford_pets"):
        resolve_dataset(str(tmp_path / "empty"), preset="no_such_preset")


def test_binary_default_encodes_0_255_and_0_1(binary_folder):
    spec = resolve_dataset(str(binary_folder))
    assert spec.names == ["background", "foreground"] and spec.binary and spec.mask_values is None
    assert spec.encode_mask(np.array([[0, 255, 1, 7]], np.uint8)).tolist() == [[0, 1, 1, 1]]
    assert spec.encode_mask(np.array([[0, 1000]], np.uint16)).tolist() == [[0, 1]]
    assert spec.encode_mask(np.zeros((2, 2), np.uint8)).dtype == np.uint8


def test_trimap_mapping_and_unmapped_values_raise(tmp_path, make_pair):
    make_pair(tmp_path, "a", mask=np.array([[1, 2], [3, 2]], np.uint8))
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"names": ["bg", "pet"], "mask_values": {1: 1, 2: 0, 3: 1}}))
    spec = resolve_dataset(str(tmp_path / "d.yaml"))
    assert spec.encode_mask(np.array([[1, 2], [3, 2]], np.uint8)).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(DataError, match="4, 9"):
        spec.encode_mask(np.array([[1, 4, 9]], np.uint8))


def test_palette_rgb_masks(tmp_path, make_pair):
    make_pair(tmp_path, "a")
    pal = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 255]]
    doc = {"names": ["bg", "red", "green"], "palette": pal, "mask_values": {0: 0, 1: 1, 2: 2, 3: "ignore"}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    spec = resolve_dataset(str(tmp_path / "d.yaml"))
    rgb = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [255, 255, 255]]], np.uint8)
    assert spec.encode_mask(rgb).tolist() == [[0, 1], [2, 255]]
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(DataError, match=r"\(1, 2, 3\)"):
        spec.encode_mask(rgb)
    # Without mask_values, palette index i is class i.
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({"palette": pal[:3]}))
    spec = resolve_dataset(str(tmp_path / "e.yaml"))
    assert spec.num_classes == 3
    assert spec.encode_mask(np.array([[[0, 255, 0]]], np.uint8)).tolist() == [[2]]


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_a_mask_drawn_in_its_alpha_channel_is_refused(tmp_path, make_pair, mode):
    """White everywhere, the labels only in the transparency: read as colour it would be all foreground."""
    from mobileseg.data import decode_sample

    alpha = np.zeros((4, 4), np.uint8)
    alpha[1:3, 1:3] = 255
    white = Image.new(mode[:-1], (4, 4), 255 if mode == "LA" else (255, 255, 255))
    white.putalpha(Image.fromarray(alpha))
    make_pair(tmp_path, "a", image=np.zeros((4, 4, 3), np.uint8), mask=np.zeros((4, 4), np.uint8))
    white.save(tmp_path / "masks" / "a.png")
    spec = resolve_dataset(str(tmp_path))
    sample = next(s for split in spec.splits.values() for s in split)
    with pytest.raises(DataError, match=r"a\.png keeps its labels in the alpha"):
        decode_sample(spec, sample, (4, 4))


def test_indexed_png_masks_are_matched_by_colour_when_a_palette_is_given(tmp_path, make_pair):
    """An indexed (mode P) mask saved by an image editor numbers its colours in its own order: with a YAML palette
    its pixels are matched by colour, never taken as class indices (index 1 is green here, class 2)."""
    from mobileseg.data import decode_sample

    mask = Image.fromarray(np.array([[0, 1], [2, 2]], np.uint8), mode="L").convert("P")
    mask.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 0] + [0] * 759)  # 0 black, 1 green, 2 red
    make_pair(tmp_path, "a", image=np.zeros((2, 2, 3), np.uint8), mask=np.zeros((2, 2), np.uint8))
    mask.save(tmp_path / "masks" / "a.png")
    doc = {"names": ["bg", "red", "green"], "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    spec = resolve_dataset(str(tmp_path / "d.yaml"))
    sample = next(s for split in spec.splits.values() for s in split)
    assert decode_sample(spec, sample, (2, 2))[1].tolist() == [[0, 2], [1, 1]]


# --------------------------------------------------------------------------------------------------- presets


def _fake_pets(root: Path, make_pair) -> Path:
    """A tiny folder laid out like Oxford-IIIT Pet: trimaps 1/2/3, official lists plus an unlisted remainder."""
    trimap = np.full((24, 32), 2, np.uint8)
    trimap[6:18, 8:24] = 1
    trimap[6, 8:24] = 3
    names = [f"Abyssinian_{i}" for i in range(1, 11)] + [f"beagle_{i}" for i in range(1, 11)]
    for i, n in enumerate(names):
        make_pair(root, n, mask=trimap, image_ext=".jpg", seed=i)
    (root / "splits").mkdir()
    (root / "splits" / "official_trainval.txt").write_text("\n".join(names[:8] + names[10:18]))
    (root / "splits" / "official_test.txt").write_text("\n".join(names[8:10] + names[18:19]))
    (root / "splits" / "no_official_split.txt").write_text(names[19])
    return root


def test_oxford_pets_preset_on_a_folder(tmp_path, make_pair):
    root = _fake_pets(tmp_path / "oxford_pets", make_pair)
    spec = resolve_dataset(str(root), preset="oxford_pets")
    assert "oxford_pets" in preset_names() and "camvid" in preset_names()
    assert spec.names == ["background", "pet"]
    assert spec.split_info["mode"] == "lists" and spec.split_info["val_fraction"] == 0.05
    assert len(spec.splits["test"]) == 3
    assert len(spec.splits["train"]) + len(spec.splits["val"]) == 17 and len(spec.splits["val"]) == 1
    assert "beagle_10" in stems(spec, "train") + stems(spec, "val")  # no_official_split goes to train
    assert spec.encode_mask(np.array([[1, 2, 3]], np.uint8)).tolist() == [[1, 0, 1]]
    # The same preset by name, its folder found through $MOBILESEG_DATASETS
    assert "preset oxford_pets" in spec.source


def test_camvid_preset_and_lookup_by_name(tmp_path, make_pair, monkeypatch):
    root = tmp_path / "datasets" / "camvid"
    mask = (np.arange(24 * 32).reshape(24, 32) % 12).astype(np.uint8)
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for i in range(n):
            make_pair(root, f"{split}_{i}", mask=mask, image_ext=".jpg", seed=i)
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("\n".join(f"{split}_{i}" for i in range(n)))
    monkeypatch.setenv("MOBILESEG_DATASETS", str(tmp_path / "datasets"))
    for spec in (resolve_dataset(str(root), preset="camvid"), resolve_dataset("camvid")):
        assert spec.num_classes == 11 and spec.names[0] == "Sky" and spec.names[-1] == "Bicyclist"
        assert [len(spec.splits[s]) for s in ("train", "val", "test")] == [4, 2, 3]
        enc = spec.encode_mask(np.arange(12, dtype=np.uint8)[None])
        assert enc.tolist() == [list(range(11)) + [255]]
    monkeypatch.setenv("MOBILESEG_DATASETS", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path / "datasets")  # a ./camvid folder named like the preset gets the preset
    assert resolve_dataset("camvid").num_classes == 11
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="preset=camvid"):
        resolve_dataset("camvid")


def test_bundled_sample_resolves_with_60_pairs():
    spec = resolve_dataset(None)
    assert spec.source == "bundled pets sample" and spec.names == ["background", "pet"]
    counts = {s: len(spec.splits[s]) for s in ("train", "val", "test")}
    assert counts == {"train": 44, "val": 8, "test": 8}
    for split in ("train", "val", "test"):
        st = stems(spec, split)
        assert any(s[0].isupper() for s in st) and any(s[0].islower() for s in st)  # cats and dogs
    for smp in spec.splits["train"][:5]:
        with Image.open(smp.image) as im:
            assert max(im.size) <= 256 and im.format == "JPEG"
    root = sample_root()
    assert "CC BY-SA 4.0" in (root / "LICENSE.txt").read_text() and "Parkhi" in (root / "README.md").read_text()
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 2_000_000
    spec = load_dataset(DataConfig())  # the default config checks clean
    assert spec.report is not None and spec.report.ok and not spec.report.warnings


def test_val_fraction_zero_trains_on_every_train_image(binary_folder):
    """``val_fraction: 0`` is a final fit: no val split carved, and no "no val split" warning (it was asked for)."""
    spec = resolve_dataset(lists_yaml(binary_folder, val_fraction=0))
    assert len(spec.splits["train"]) == 16 and not spec.splits["val"] and len(spec.splits["test"]) == 4
    assert spec.split_info["val_fraction"] == 0
    assert not any("no val split" in line for line in spec.warning_lines())
    without = resolve_dataset(lists_yaml(binary_folder))  # the same lists without it: worth a warning
    assert any("no val split" in line for line in without.warning_lines())
