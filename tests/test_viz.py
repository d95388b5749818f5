"""Figures a person can read: legends name every class, panels keep the image shape, colours stay apart.

Every figure is built for a binary and an 11-class case from small synthetic arrays and read back from its
matplotlib artists (legend texts, axes boxes, tick values, cell texts), then saved to check a PNG is written.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from mobileseg import viz
from mobileseg.data import DataError, resolve_dataset

CAMVID = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]
CASES = {"binary": ["background", "cat"], "multi": CAMVID}


def legend_texts(fig) -> set[str]:
    """Every label of every legend in the figure (figure-level and per-axes)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    for sub in getattr(fig, "subfigs", []):
        legends += list(sub.legends)
    return {t.get_text() for lg in legends for t in lg.get_texts()}


def all_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.get_axes() for t in ax.texts]


def box_ratios(fig, axes) -> list[float]:
    """Displayed width / height of each axes in pixels, after layout and aspect adjustment (one draw)."""
    fig.draw_without_rendering()
    boxes = [ax.get_window_extent() for ax in axes]  # display pixels, right for axes inside subfigures too
    return [b.width / b.height for b in boxes]


def samples(names: list[str], n: int = 3, shape: tuple[int, int] = (48, 48)):
    """Images with one rectangle per class, truth with an ignored band, predictions shifted a little (wrong)."""
    rng = np.random.default_rng(len(names))
    k = len(names)
    images, targets, preds = [], [], []
    for i in range(n):
        img = rng.integers(0, 60, (*shape, 3), dtype=np.uint8)
        mask = np.zeros(shape, np.uint8)
        for c in range(1, k):
            y, x = rng.integers(0, shape[0] - 12), rng.integers(0, shape[1] - 12)
            mask[y : y + 12, x : x + 12] = c
        img[mask > 0] = 200
        mask[:2] = 255
        pred = np.roll(np.where(mask == 255, 0, mask), 3 + i, axis=1).astype(np.uint8)
        images.append(img)
        targets.append(mask)
        preds.append(pred)
    return images, targets, preds


# ------------------------------------------------------------------------------------------------- palette


def test_srgb_to_lab_matches_reference_values():
    # Reference CIELAB (D65) values of sRGB white, red and mid grey.
    assert np.allclose(viz.srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=0.01)
    assert np.allclose(viz.srgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.05)
    assert np.allclose(viz.srgb_to_lab([128, 128, 128]), [53.59, 0, 0], atol=0.05)


@pytest.mark.parametrize("n", [2, 11, 20])
def test_default_palette_colours_stay_apart(n):
    names = [f"c{i}" for i in range(n)]
    pal = viz.default_palette(n, names)
    assert len(pal) == n and len(set(pal)) == n
    assert viz.min_lab_distance(pal) >= viz.MIN_LAB_DISTANCE
    # Also apart from the ignored colour, so void never looks like a class.
    assert min(viz.lab_distance(c, viz.IGNORE_COLOR) for c in pal) >= viz.MIN_LAB_DISTANCE
    assert len(set(viz.default_palette(30, [f"c{i}" for i in range(30)]))) == 30


def test_class_zero_is_coloured_unless_it_is_background():
    assert viz.default_palette(11, CAMVID)[0] != viz.BACKGROUND_COLOR  # CamVid's Sky gets a colour
    assert viz.default_palette(3, ["background", "a", "b"])[0] == viz.BACKGROUND_COLOR
    assert viz.default_palette(2)[0] == viz.BACKGROUND_COLOR  # no names: binary background/foreground
    # Overlays paint a coloured class 0 (Sky) and leave a black background class unpainted.
    img = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    assert (viz.overlay(img, mask, viz.default_palette(11, CAMVID)) != img).any()
    assert (viz.overlay(img, mask, viz.default_palette(2, ["background", "cat"])) == img).all()


def test_legend_entries_name_classes_and_ignored():
    entries = viz.legend_entries(CAMVID, viz.default_palette(11, CAMVID))
    assert [e["name"] for e in entries] == [*CAMVID, "ignored"]
    assert entries[-1]["color"] == viz.IGNORE_COLOR and entries[-1]["index"] == 255
    assert entries[0]["color"] == viz.default_palette(11, CAMVID)[0]
    assert [e["name"] for e in viz.legend_entries(["a", "b"], [(0, 0, 0), (1, 2, 3)], ignore=False)] == ["a", "b"]


def test_overlay_outline_and_error_map():
    img = np.full((20, 20, 3), 90, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    pal = [(0, 0, 0), (255, 0, 0)]
    out = viz.overlay(img, mask, pal, alpha=0.5, outline=True, outline_width=1)
    assert out[5, 10].tolist() == [255, 0, 0]  # the region's edge at full colour
    assert out[10, 10].tolist() != [255, 0, 0] and out[10, 10, 0] > 90  # its inside blended
    assert out[0, 0].tolist() == [90, 90, 90]  # background untouched
    truth = mask.copy()
    truth[0, :] = 255
    pred = np.roll(mask, 2, axis=1)
    err = viz.error_map(img, truth, pred, binary=True)
    assert tuple(err[0, 0]) == viz.IGNORE_COLOR
    assert err[10, 16, 0] > err[10, 16, 1]  # FP (predicted, not true): red
    assert err[10, 5, 2] > err[10, 5, 0]  # FN (true, missed): blue
    assert err[10, 10, 1] > err[10, 10, 0]  # TP: green


def test_image_iou_and_pick_worst():
    t = np.array([[0, 1, 1, 255]], np.uint8)
    p = np.array([[1, 1, 0, 0]], np.uint8)
    assert viz.image_iou(t, p, 2) == pytest.approx(1 / 3)
    assert viz.image_iou(np.zeros((2, 2)), np.zeros((2, 2)), 2) == 1.0
    worst, note = viz.pick_worst([0.9, 0.1, 0.5, 0.3], 2, shown=[1])
    assert worst == [3, 2] and "1 worse image" in note
    worst, note = viz.pick_worst([0.9, 0.1], 2, shown=[0, 1])
    assert worst == [1, 0] and "repeat" in note
    assert viz.pick_worst([0.2, 0.1], 1, shown=[5]) == ([1], "")


# ------------------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize("case", ["binary", "multi"])
def test_prediction_grid_legend_aspect_iou_and_file(tmp_path, case):
    names = CASES[case]
    pal = viz.default_palette(len(names), names)
    images, targets, preds = samples(names)
    sizes = [(360, 480), (480, 360), None]  # originals: landscape, portrait, as the array
    fig = viz.figure_prediction_grid(
        images, targets, preds, pal, ["a", "b", "c"], names=names, sizes=sizes, title="exp7 test"
    )
    texts = legend_texts(fig)
    assert set(names) | {"ignored"} <= texts
    assert ({"TP: found", "FP: false alarm", "FN: missed"} if case == "binary" else {"wrong class"}) <= texts
    assert "exp7 test" in fig.get_suptitle()
    axes = np.array(fig.get_axes()).reshape(3, 5)
    for row, (h, w) in enumerate([(360, 480), (480, 360), (48, 48)]):
        assert box_ratios(fig, axes[row]) == pytest.approx([w / h] * 5, rel=0.01)
    labels = all_texts(fig)
    for r in range(3):
        iou = viz.image_iou(targets[r], preds[r], len(names))
        assert any(t.startswith("abc"[r]) and f"IoU {iou:.2f}" in t for t in labels)
    path = viz.plot_prediction_grid(images, targets, preds, tmp_path / "p.png", pal, ["a", "b", "c"], names=names)
    assert Image.open(path).size[0] > 300


def test_prediction_grid_keeps_old_positional_call_and_unlabelled_rows(tmp_path):
    images, targets, preds = samples(CASES["binary"], n=2)
    # The evaluator's call: (images, targets, preds, path, palette, titles, ignore_index), titles already with IoU.
    path = viz.plot_prediction_grid(
        images, [targets[0], None], preds, tmp_path / "w.png", viz.default_palette(2), ["s1  IoU 0.10", "s2"], 255
    )
    assert path.is_file()
    fig = viz.figure_prediction_grid(images, [targets[0], None], preds, viz.default_palette(2), ["s1  IoU 0.10", "s2"])
    labels = all_texts(fig)
    assert sum("IoU" in t for t in labels) == 1 and "no mask" in labels  # no IoU twice, none for no truth


@pytest.mark.parametrize("case", ["binary", "multi"])
def test_train_batch_shows_pairs_with_legend(tmp_path, case):
    names = CASES[case]
    images, targets, _ = samples(names, n=5, shape=(32, 48))
    batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255  # as the loader gives it: CHW 0..1
    fig = viz.figure_train_batch(batch, np.stack(targets), viz.default_palette(len(names), names), names, title="exp7")
    assert set(names) | {"ignored"} <= legend_texts(fig)
    assert "exp7" in fig.get_suptitle()
    image_axes = [ax for ax in fig.get_axes() if ax.images]
    assert len(image_axes) == 10
    assert box_ratios(fig, image_axes) == pytest.approx([48 / 32] * 10, rel=0.01)
    path = viz.plot_train_batch(batch, np.stack(targets), tmp_path / "b.png", viz.default_palette(len(names)), names)
    assert path.is_file()


def history(epochs: int = 2) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train/loss": 1 / e,
            "val/loss": 1.1 / e,
            "train/iou": 0.2 * e,
            "val/iou": 0.3 - 0.1 * (e - 1) ** 2,
        }
        | {"lr": 0.01 / e}
        for e in range(1, epochs + 1)
    ]


def test_results_integer_ticks_best_marker_and_names(tmp_path):
    fig = viz.figure_results(history(2), title="exp7", binary=False)
    assert "exp7" in fig.get_suptitle() and "best epoch 1" in fig.get_suptitle()  # val/iou peaks at epoch 1
    axes = {ax.get_title(): ax for ax in fig.get_axes() if ax.get_title()}
    assert "mean IoU" in axes and "iou" not in axes
    fig.draw_without_rendering()
    for ax in axes.values():
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1, 2]
    iou = axes["mean IoU"]
    assert any(line.get_xdata()[0] == 1 and line.get_marker() == "*" for line in iou.get_lines())
    assert "best epoch 1" in {t.get_text() for t in iou.get_legend().get_texts()}
    assert viz.figure_results(history(3), best_epoch=3).get_suptitle().endswith("(best epoch 3)")
    assert "foreground IoU" in {ax.get_title() for ax in viz.figure_results(history(2), binary=True).get_axes()}
    assert viz.plot_results(history(2), tmp_path / "results.png", title="exp7").is_file()


@pytest.mark.parametrize("case", ["binary", "multi"])
def test_confusion_matrix_counts_and_shares(tmp_path, case):
    names = CASES[case]
    k = len(names)
    mat = np.full((k, k), 7) + np.diag(np.arange(1, k + 1) * 1000)
    mat[0, 1] = 0
    fig = viz.figure_confusion_matrix(mat, names, title="exp7 test")
    counts_ax, share_ax = [ax for ax in fig.get_axes() if ax.get_title()]
    counts = [t.get_text() for t in counts_ax.texts]
    shares = [t.get_text() for t in share_ax.texts]
    assert "1007" in counts and "7" in counts and "0" in counts  # raw pixel counts, the zero cell as 0
    assert f"{1007 / (1007 + 7 * (k - 2)):.2f}" in shares  # row-normalised
    assert [t.get_text() for t in counts_ax.get_yticklabels()] == names
    assert "exp7 test" in fig.get_suptitle()
    assert viz.plot_confusion_matrix(mat, names, tmp_path / "cm.png").is_file()


@pytest.mark.parametrize("case", ["binary", "multi"])
def test_label_distribution(tmp_path, case):
    names = CASES[case]
    k = len(names)
    shares = {
        "train": {n: 1 / k for n in names},
        "val": {**{n: 0.9 / (k - 1) for n in names[:-1]}, "ignored": 0.1},  # last class missing from val
    }
    pal = viz.default_palette(k, names)
    fig = viz.figure_label_distribution(shares, pal, names, title="exp7")
    assert set(names) | {"ignored"} <= legend_texts(fig)
    assert {"train", "val"} <= legend_texts(fig)
    assert " none in val" in all_texts(fig)
    stacked = fig.get_axes()[0]
    colours = {tuple(round(v * 255) for v in p.get_facecolor()[:3]) for p in stacked.patches}
    assert {tuple(c) for c in pal} <= colours  # stacked segments in the class colours
    assert viz.plot_label_distribution(shares, tmp_path / "labels.png", pal, title="exp7").is_file()


# ------------------------------------------------------------------------------------------------- dataset colours


def test_camvid_preset_has_display_colors_separate_from_decoding(tmp_path, make_pair):
    root = tmp_path / "camvid"
    make_pair(root, "a", mask=(np.arange(24 * 32).reshape(24, 32) % 12).astype(np.uint8))
    (root / "splits").mkdir()
    for split in ("train", "val", "test"):
        (root / "splits" / f"{split}.txt").write_text("a\n" if split == "train" else "")
    spec = resolve_dataset(str(root), preset="camvid")
    assert spec.colors is not None and len(spec.colors) == 11 and spec.colors[0] == (128, 128, 128)
    assert spec.palette is None  # masks are still decoded from values, not colours
    # Own names over the preset drop the preset's colours instead of failing on the count.
    (root / "data.yaml").write_text(yaml.safe_dump({"preset": "camvid", "names": [f"c{i}" for i in range(12)]}))
    assert resolve_dataset(str(root / "data.yaml")).colors is None
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["a", "b"], "colors": [[0, 0, 0]]}))
    with pytest.raises(DataError, match="'colors' has 1 colours for 2 classes"):
        resolve_dataset(str(root / "data.yaml"))
