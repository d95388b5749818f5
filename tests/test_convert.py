"""COCO and LabelMe annotations become exact class-index masks and a dataset YAML that mobileseg reads."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobileseg.data import DataError, resolve_dataset
from mobileseg.data.convert import convert_coco, convert_labelme, polygon_mask, rasterize

H, W = 8, 10
# The rectangle from corner (x=2, y=1) to (6, 4) covers columns 2..5 and rows 1..3: 4 x 3 pixels.
SMALL = [2, 1, 6, 1, 6, 4, 2, 4]
# The rectangle from (1, 1) to (9, 7) covers columns 1..8 and rows 1..6; it contains SMALL.
BIG = [1, 1, 9, 1, 9, 7, 1, 7]


def rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(params=["pycocotools", "numpy"])
def rasteriser(request, monkeypatch):
    """Run each test with pycocotools and with the numpy fallback: the masks must be the same."""
    if request.param == "pycocotools":
        pytest.importorskip("pycocotools")
    else:
        monkeypatch.setattr(rasterize, "_coco_mask", None)
    return request.param


def write_image(path: Path, w: int = W, h: int = H) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_polygon_mask_rectangle(rasteriser):
    assert np.array_equal(polygon_mask([SMALL], H, W), rect(2, 1, 6, 4))
    # Half-pixel corners: centres on the left/top edge are out, on the right/bottom edge in (pycocotools' rule).
    assert np.array_equal(polygon_mask([[2.5, 1.5, 6.5, 1.5, 6.5, 4.5, 2.5, 4.5]], H, W), rect(3, 2, 7, 5))


# ------------------------------------------------------------------------------------------------ COCO


def coco_doc() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "sub/a.png", "width": W, "height": H},
            {"id": 8, "file_name": "b.png", "width": W, "height": H},
        ],
        "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}],  # ids, not list order, set indices
        "annotations": [
            # the small cat comes first in the file but is painted after (on top of) the big dog
            {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [SMALL], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "segmentation": [BIG], "iscrowd": 0},
            # a crowd region as uncompressed RLE: column-major runs, 72 zeros then the 8 pixels of column 9
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "segmentation": {"size": [H, W], "counts": [72, 8]},
                "iscrowd": 1,
            },
        ],
    }


def make_coco(tmp_path: Path, doc: dict | None = None) -> tuple[Path, Path]:
    images = tmp_path / "coco_images"
    write_image(images / "sub" / "a.png")
    write_image(images / "b.png")
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(coco_doc() if doc is None else doc))
    return json_path, images


def test_coco_masks_classes_overlap_and_yaml(tmp_path, rasteriser):
    json_path, images = make_coco(tmp_path)
    out = tmp_path / "out"
    yaml_path = convert_coco(json_path, images, out)
    assert yaml_path == out / "data.yaml"

    expected = np.zeros((H, W), np.uint8)
    expected[rect(9, 0, 10, 8)] = 255  # crowd -> ignore, painted first
    expected[rect(1, 1, 9, 7)] = 2  # dog (category id 3, the second id) -> class 2
    expected[rect(2, 1, 6, 4)] = 1  # cat (category id 1) -> class 1, on top
    assert np.array_equal(read_mask(out / "masks" / "a.png"), expected)
    assert np.array_equal(read_mask(out / "masks" / "b.png"), np.zeros((H, W), np.uint8))  # no annotations
    assert (out / "images" / "a.png").is_file() and (out / "images" / "b.png").is_file()

    doc = yaml.safe_load(yaml_path.read_text())
    assert doc == {
        "path": ".",
        "names": ["background", "cat", "dog"],
        "ignore_index": 255,
        "mask_values": {0: 0, 1: 1, 2: 2, 255: "ignore"},
    }
    spec = resolve_dataset(yaml_path)  # mobileseg reads what was written
    assert spec.names == ["background", "cat", "dog"]
    assert np.array_equal(spec.encode_mask(expected), expected)


def test_coco_crowd_as_class_and_name_subset(tmp_path, rasteriser):
    json_path, images = make_coco(tmp_path)
    out = tmp_path / "out"
    convert_coco(json_path, images, out, names=["background", "dog"], unknown="background", crowd="class")
    expected = np.zeros((H, W), np.uint8)
    expected[rect(9, 0, 10, 8)] = 1  # the crowd region keeps its class
    expected[rect(1, 1, 9, 7)] = 1  # dog is class 1 now; the cat is not in names and stays background
    assert np.array_equal(read_mask(out / "masks" / "a.png"), expected)
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == ["background", "dog"]


def test_coco_panoptic(tmp_path):
    write_image(tmp_path / "imgs" / "p.png")
    ids = np.zeros((H, W), np.int64)
    ids[rect(0, 0, 5, 8)] = 300  # segment 300 = (44, 1, 0) in RGB: R + 256 G + 256^2 B
    ids[rect(5, 0, 10, 4)] = 5
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    (tmp_path / "panoptic_train").mkdir()
    Image.fromarray(rgb).save(tmp_path / "panoptic_train" / "p.png")
    doc = {
        "images": [{"id": 1, "file_name": "p.png", "width": W, "height": H}],
        "categories": [{"id": 10, "name": "road"}, {"id": 20, "name": "car"}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "p.png",
                "segments_info": [
                    {"id": 300, "category_id": 20, "iscrowd": 0},
                    {"id": 5, "category_id": 10, "iscrowd": 1},
                ],
            }
        ],
    }
    json_path = tmp_path / "panoptic_train.json"
    json_path.write_text(json.dumps(doc))
    convert_coco(json_path, tmp_path / "imgs", tmp_path / "out")
    expected = np.zeros((H, W), np.uint8)
    expected[rect(0, 0, 5, 8)] = 2  # car
    expected[rect(5, 0, 10, 4)] = 255  # crowd road -> ignore
    assert np.array_equal(read_mask(tmp_path / "out" / "masks" / "p.png"), expected)


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda d: d["annotations"][0].update(image_id=99), "refers to image_id 99"),
        (lambda d: d["annotations"][0].update(segmentation=[[2, 1, 6, 1]]), "at least 3 points"),
        (lambda d: d["annotations"][0].update(category_id=42), "category_id 42"),
        (lambda d: d["images"][1].update(file_name="missing.png"), "image 'missing.png' not found"),
        (lambda d: d["images"][1].update(width=99), "annotated size 99x8"),
    ],
)
def test_coco_errors_name_the_file(tmp_path, break_it, words):
    doc = coco_doc()
    break_it(doc)
    json_path, images = make_coco(tmp_path, doc)
    with pytest.raises(DataError, match=words) as err:
        convert_coco(json_path, images, tmp_path / "out")
    assert str(json_path) in str(err.value)


def test_coco_malformed_json(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        convert_coco(bad, tmp_path, tmp_path / "out")
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO file"):
        convert_coco(bad, tmp_path, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ LabelMe


def labelme_shape(label: str, points: list, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}}


def pairs(flat: list[int]) -> list[list[int]]:
    return [flat[i : i + 2] for i in range(0, len(flat), 2)]


def make_labelme(folder: Path) -> None:
    write_image(folder / "one.png")
    one = {
        "version": "5.4.1",
        "imagePath": "one.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
        "shapes": [
            labelme_shape("dog", pairs(BIG)),
            labelme_shape("cat", pairs(SMALL)),  # drawn later: on top of the dog
            labelme_shape("__ignore__", [[0, 7], [3, 7], [3, 8], [0, 8]]),  # bottom row, columns 0..2
            labelme_shape("cat", [[5, 5]], "point"),  # no area: skipped
        ],
    }
    (folder / "one.json").write_text(json.dumps(one))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(buf, format="PNG")
    two = {
        "imagePath": "elsewhere/two.jpg",  # not there: the embedded image is used
        "imageData": base64.b64encode(buf.getvalue()).decode(),
        "imageHeight": H,
        "imageWidth": W,
        "shapes": [labelme_shape("bird", [[6, 2], [9, 5]], "rectangle")],
    }
    (folder / "two.json").write_text(json.dumps(two))


def test_labelme_masks_order_and_yaml(tmp_path, rasteriser):
    make_labelme(tmp_path / "lm")
    out = tmp_path / "out"
    yaml_path = convert_labelme(tmp_path / "lm", out)
    # names: background + the labels found, sorted; __ignore__ is no class
    assert yaml.safe_load(yaml_path.read_text())["names"] == ["background", "bird", "cat", "dog"]
    one = np.zeros((H, W), np.uint8)
    one[rect(1, 1, 9, 7)] = 3  # dog
    one[rect(2, 1, 6, 4)] = 2  # cat, later in the file -> on top
    one[7, 0:3] = 255  # ignore
    assert np.array_equal(read_mask(out / "masks" / "one.png"), one)
    two = np.zeros((H, W), np.uint8)
    two[rect(6, 2, 9, 5)] = 1  # rectangle (6, 2)-(9, 5): columns 6..8, rows 2..4
    assert np.array_equal(read_mask(out / "masks" / "two.png"), two)
    assert (out / "images" / "one.png").is_file() and (out / "images" / "two.png").is_file()
    assert resolve_dataset(yaml_path).names == ["background", "bird", "cat", "dog"]


def test_labelme_given_names(tmp_path):
    make_labelme(tmp_path / "lm")
    names = ["bg", "dog", "cat", "bird"]
    convert_labelme(sorted((tmp_path / "lm").glob("*.json")), tmp_path / "out", names=names)
    mask = read_mask(tmp_path / "out" / "masks" / "one.png")
    assert mask[5, 1] == 1 and mask[2, 3] == 2  # the given order sets the indices
    with pytest.raises(DataError, match=r"one\.json: shape #0 \('dog'\).*not in names"):
        convert_labelme(tmp_path / "lm", tmp_path / "out2", names=["background", "cat", "bird"])


def test_class_names_must_start_with_the_background(tmp_path):
    """class_names=cat,dog would paint cat as 0, the background, and its shapes would vanish without a word."""
    json_path, images = make_coco(tmp_path)
    with pytest.raises(DataError, match="class_names start with 'cat'.*background"):
        convert_coco(json_path, images, tmp_path / "out", names=["cat", "dog"])
    make_labelme(tmp_path / "lm")
    with pytest.raises(DataError, match="class_names start with 'dog'"):
        convert_labelme(tmp_path / "lm", tmp_path / "out", names=["dog", "cat", "bird"])


def test_a_second_conversion_never_mixes_with_the_first(tmp_path):
    """Masks already in out/masks are refused (another run may number classes differently); a conversion that
    fails half-way leaves no masks, so the corrected re-run goes through."""
    make_labelme(tmp_path / "lm")
    convert_labelme(tmp_path / "lm", tmp_path / "out")
    with pytest.raises(DataError, match=r"out/masks already holds masks"):
        convert_labelme(tmp_path / "lm", tmp_path / "out", names=["background", "cat", "dog", "bird"])
    json_path, images = make_coco(tmp_path)
    doc = coco_doc()
    doc["images"][1]["file_name"] = "missing.png"  # the second image fails after the first mask was made
    json_path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="missing.png"):
        convert_coco(json_path, images, tmp_path / "coco_out")
    assert not (tmp_path / "coco_out" / "masks").exists()
    json_path.write_text(json.dumps(coco_doc()))
    convert_coco(json_path, images, tmp_path / "coco_out")
    assert sorted(p.name for p in (tmp_path / "coco_out" / "masks").iterdir()) == ["a.png", "b.png"]


def test_labelme_errors_name_the_file(tmp_path):
    folder = tmp_path / "lm"
    write_image(folder / "x.png")
    doc = {"imagePath": "x.png", "imageHeight": H, "imageWidth": W, "shapes": [labelme_shape("cat", [[1, 1], [5, 5]])]}
    (folder / "x.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"x\.json: shape #0 \('cat'\): a polygon needs at least 3 points"):
        convert_labelme(folder, tmp_path / "out")
    (folder / "x.json").write_text("{not json")
    with pytest.raises(DataError, match=r"x\.json: not valid JSON"):
        convert_labelme(folder, tmp_path / "out")
    doc["imagePath"] = "gone.png"
    doc["shapes"] = []
    (folder / "x.png").unlink()
    (folder / "x.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"x\.json: image 'gone.png' not found"):
        convert_labelme(folder, tmp_path / "out")


def test_coco_compressed_rle(tmp_path, monkeypatch):
    mask_util = pytest.importorskip("pycocotools.mask")
    region = rect(3, 2, 7, 6)
    rle = mask_util.encode(np.asfortranarray(region.astype(np.uint8)))
    doc = coco_doc()
    doc["annotations"] = [
        {
            "id": 1,
            "image_id": 8,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": {**rle, "counts": rle["counts"].decode()},
        }
    ]
    json_path, images = make_coco(tmp_path, doc)
    convert_coco(json_path, images, tmp_path / "out")
    assert np.array_equal(read_mask(tmp_path / "out" / "masks" / "b.png"), region.astype(np.uint8))  # cat = 1
    monkeypatch.setattr(rasterize, "_coco_mask", None)
    with pytest.raises(DataError, match="compressed RLE needs pycocotools"):
        convert_coco(json_path, images, tmp_path / "out2")


def test_convert_command_then_the_dataset_loads(tmp_path, capsys):
    """`mobileseg convert` for both formats (the format detected from the file), ending with the YAML to train on."""
    from mobileseg.cli import main

    make_labelme(tmp_path / "lm")
    assert main(["convert", f"labels={tmp_path / 'lm'}", f"out={tmp_path / 'from_labelme'}"]) == 0
    out = capsys.readouterr().out
    assert "mobileseg train data=" in out and "data.yaml" in out
    assert resolve_dataset(tmp_path / "from_labelme" / "data.yaml").names == ["background", "bird", "cat", "dog"]

    images = tmp_path / "coco_images"
    for entry in coco_doc()["images"]:
        write_image(images / entry["file_name"], entry["width"], entry["height"])
    (tmp_path / "coco.json").write_text(json.dumps(coco_doc()))
    assert main(["convert", f"labels={tmp_path / 'coco.json'}", f"images={images}", f"out={tmp_path / 'c'}"]) == 0
    assert (tmp_path / "c" / "data.yaml").is_file()
    assert main(["convert", f"labels={tmp_path / 'coco.json'}", f"out={tmp_path / 'd'}"]) == 1  # no images=
    assert "images=" in capsys.readouterr().err
