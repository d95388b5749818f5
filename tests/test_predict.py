"""Prediction: original sizes, bad inputs skipped and named, output files, TTA, the Predictor API."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import make_checkpoint
from PIL import Image

import mobileseg
from mobileseg.deploy.runtimes import load_predictor
from mobileseg.engine.predict_run import resolve_source
from mobileseg.errors import MissingFileError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = {"rgb.jpg": (50, 70, "RGB"), "gray.png": (97, 131, "L"), "rgba.png": (300, 200, "RGBA")}  # H, W, mode


def make_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (h, w, mode) in SIZES.items():
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 255, (h, w, channels), dtype=np.uint8)
        Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def binary_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "best.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


def test_masks_at_original_size_and_files(binary_ckpt, images, tmp_path):
    run = mobileseg.predict(
        weights=str(binary_ckpt),
        source=str(images),
        out=str(tmp_path / "out"),
        save_probs=True,
        verbose=False,
        threads=1,
    )
    assert run.save_dir == tmp_path / "out" and len(run) == 3 and not run.skipped
    for r in run:
        h, w, _ = SIZES[Path(r.path).name]
        assert r.mask.shape == (h, w) and r.mask.dtype == np.uint8 and set(np.unique(r.mask)) <= {0, 1}
        assert r.probs.shape == (h, w) and r.probs.dtype == np.float32
        assert r.seconds > 0 and abs(sum(r.shares.values()) - 1) < 1e-6
        stem = Path(r.path).stem
        with Image.open(run.save_dir / f"{stem}_mask.png") as m:
            assert m.mode == "L" and m.size == (w, h)
            assert set(np.unique(np.asarray(m))) <= {0, 255}
            np.testing.assert_array_equal(np.asarray(m) // 255, r.mask)
        with Image.open(run.save_dir / f"{stem}_overlay.jpg") as o:
            assert o.size == (w, h) and o.mode == "RGB"
        probs = np.load(run.save_dir / f"{stem}_probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (h, w)
    with open(run.save_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [Path(row["file"]).name for row in rows] == sorted(SIZES)
    assert {(int(row["height"]), int(row["width"])) for row in rows} == {(h, w) for h, w, _ in SIZES.values()}
    assert all(0 <= float(row["foreground_share"]) <= 1 for row in rows)


def test_default_out_folder_increments(binary_ckpt, images, tmp_path):
    kw = dict(weights=str(binary_ckpt), source=str(images / "rgb.jpg"), project=str(tmp_path), verbose=False, threads=1)
    first, second = mobileseg.predict(**kw), mobileseg.predict(**kw)
    assert first.save_dir == tmp_path / "predict" / "exp" and second.save_dir == tmp_path / "predict" / "exp2"


def test_corrupt_files_are_skipped_and_named(binary_ckpt, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in SIZES:
        (folder / name).write_bytes((images / name).read_bytes())
    (folder / "notes.jpg").write_text("this is text, not a JPEG")
    jpeg = (images / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    run = mobileseg.predict(
        weights=str(binary_ckpt), source=str(folder), out=str(tmp_path / "o"), batch=2, verbose=False, threads=1
    )
    assert sorted(Path(r.path).name for r in run) == sorted(SIZES)
    assert sorted(Path(p).name for p, _ in run.skipped) == ["notes.jpg", "truncated.jpg"]
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "truncated.jpg" in err and "2 input(s) skipped" in err


def test_a_partial_predict_writes_the_readable_images_and_exits_1(binary_ckpt, images, tmp_path, capsys):
    """A script that runs ``mobileseg predict`` learns from the exit status that an input was lost: every readable
    image is still written, the bad one is named, and the status is 1, not the 0 of a complete run."""
    from mobileseg.cli import main

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in SIZES:
        (folder / name).write_bytes((images / name).read_bytes())
    (folder / "notes.jpg").write_text("this is text, not a JPEG")
    args = ["predict", f"weights={binary_ckpt}", "threads=1", "verbose=false"]
    rc = main([*args, f"source={folder}", f"out={tmp_path / 'partial'}"])
    err = capsys.readouterr().err
    assert rc == 1 and "1 of 4 inputs could not be read" in err and "notes.jpg" in err
    written = sorted(p.name for p in (tmp_path / "partial").glob("*_mask.png"))
    assert written == sorted(f"{Path(n).stem}_mask.png" for n in SIZES)
    assert main([*args, f"source={images}", f"out={tmp_path / 'whole'}"]) == 0


def test_a_source_with_no_readable_image_is_an_error(binary_ckpt, tmp_path, capsys):
    """Skipping is for the odd bad file: when nothing could be predicted the command fails (exit status 1) and
    names every file, instead of reporting success with no output."""
    from mobileseg.cli import main

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_text("not a JPEG")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(mobileseg.data.DataError, match=r"none of the 2 image\(s\)"):
        mobileseg.predict(weights=str(binary_ckpt), source=str(folder), out=str(tmp_path / "o"), verbose=False)
    rc = main(["predict", f"weights={binary_ckpt}", f"source={folder}", f"out={tmp_path / 'o2'}", "threads=1"])
    err = capsys.readouterr().err
    assert rc == 1 and "mobileseg predict: error: none of the 2" in err and "a.jpg" in err and "b.png" in err


def test_a_folder_of_subfolders_says_how_to_reach_their_images(binary_ckpt, tmp_path):
    """A folder is read one level deep; when its images sit in subfolders the error gives the recursive glob
    that reads them, and that glob predicts every one (two with the same name in different subfolders keep
    separate outputs)."""
    root = tmp_path / "by_camera"
    for sub in ("cam1", "cam2/day"):
        make_images(root / sub)
    kw = {"weights": str(binary_ckpt), "verbose": False, "threads": 1}
    with pytest.raises(MissingFileError, match=r"subfolders hold images, which source='.*by_camera/\*\*/\*'"):
        mobileseg.predict(source=str(root), out=str(tmp_path / "o"), **kw)
    run = mobileseg.predict(source=str(root / "**" / "*"), out=str(tmp_path / "o2"), **kw)
    assert len(run.results) == 2 * len(SIZES)
    assert len(list((tmp_path / "o2").glob("*_mask.png"))) == 2 * len(SIZES)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError) as e:
        mobileseg.predict(source=str(empty), out=str(tmp_path / "o3"), **kw)
    assert "recursive glob" not in str(e.value)


def test_batched_folder_predict_equals_one_by_one(binary_ckpt, tmp_path):
    """Batches of 4 (images of different sizes, the next batch decoded in a thread) give the masks of predicting
    each image alone, exactly in fp32 (probabilities to float rounding: the conv kernels sum in a batch-dependent
    order, ~2e-7), within bf16 rounding under autocast."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(50, 70), (97, 131), (64, 64), (33, 47), (120, 80), (70, 50), (81, 99)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (folder / "im3b.jpg").write_text("not an image")  # skipped in the middle of a batch
    kw = {"weights": str(binary_ckpt), "source": str(folder), "verbose": False, "threads": 1}
    for amp in (False, True):
        one = mobileseg.predict(batch=1, amp=amp, out=str(tmp_path / f"b1-{amp}"), **kw)
        four = mobileseg.predict(batch=4, amp=amp, out=str(tmp_path / f"b4-{amp}"), **kw)
        assert [r.path for r in one] == [r.path for r in four] and len(one) == 7
        assert [p for p, _ in one.skipped] == [p for p, _ in four.skipped] == [str(folder / "im3b.jpg")]
        for a, b in zip(one, four, strict=True):
            if not amp:
                np.testing.assert_array_equal(a.mask, b.mask)
                np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)
            else:
                assert (a.mask != b.mask).mean() < 1e-3 and np.abs(a.probs - b.probs).max() < 1e-2
        with open(one.save_dir / "predictions.csv") as f1, open(four.save_dir / "predictions.csv") as f4:
            assert [r[:4] for r in csv.reader(f1)] == [r[:4] for r in csv.reader(f4)]


def test_list_file_and_glob_sources(images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\n{images / 'rgb.jpg'}\nmissing.png\n\n{images / 'gray.png'}\n")
    files, missing = resolve_source(str(listing))
    assert [f.name for f in files] == ["rgb.jpg", "gray.png"]
    assert len(missing) == 1 and "missing.png" in missing[0][0]
    files, _ = resolve_source(str(images / "*.png"))
    assert [f.name for f in files] == ["gray.png", "rgba.png"]
    with pytest.raises(FileNotFoundError):
        resolve_source(str(tmp_path / "nothing-here"))


def test_list_entries_are_read_beside_the_list_first(images, tmp_path, monkeypatch):
    """A relative entry names the file beside the list, even when the working directory has one of that name
    (then the working directory, for lists written relative to where they are run)."""
    lists, elsewhere = tmp_path / "lists", tmp_path / "cwd"
    lists.mkdir()
    elsewhere.mkdir()
    (lists / "a.png").write_bytes((images / "gray.png").read_bytes())
    (elsewhere / "a.png").write_bytes((images / "rgba.png").read_bytes())
    (elsewhere / "b.png").write_bytes((images / "rgba.png").read_bytes())
    (lists / "list.txt").write_text("a.png\nb.png\n")
    monkeypatch.chdir(elsewhere)
    files, missing = resolve_source(str(lists / "list.txt"))
    assert files == [lists / "a.png", Path("b.png")] and not missing


def test_tta_differs_but_keeps_size(binary_ckpt, images):
    plain = load_predictor(binary_ckpt, threads=1).predict_image(images / "gray.png")
    tta = load_predictor(binary_ckpt, tta=True, threads=1).predict_image(images / "gray.png")
    assert tta.mask.shape == plain.mask.shape == (97, 131)
    assert np.abs(tta.probs - plain.probs).max() > 1e-4


def test_predictor_inputs_and_threads(binary_ckpt, images):
    predictor = load_predictor(binary_ckpt, threads=1)
    pil = Image.open(images / "rgba.png")
    a = predictor.predict_image(images / "rgba.png")
    b = predictor.predict_image(pil)
    c = predictor.predict_image(np.asarray(pil.convert("RGB")))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.mask, c.mask)
    assert a.names == ["background", "pet"] and a.path is not None and b.path is None
    # Concurrent calls (an HTTP server's threads) give the same answers as sequential ones.
    inputs = [images / n for n in SIZES] * 2
    expected = [predictor.predict_image(p).mask for p in inputs]
    got: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i, p=p: got.__setitem__(i, predictor.predict_image(p).mask))
        for i, p in enumerate(inputs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, mask in enumerate(expected):
        np.testing.assert_array_equal(got[i], mask)


def test_multiclass_masks_use_palette(tmp_path, images):
    ckpt = make_checkpoint(tmp_path / "mc.pt", num_classes=3)
    run = mobileseg.predict(
        weights=str(ckpt), source=str(images), out=str(tmp_path / "o"), save_probs=True, verbose=False, threads=1
    )
    r = run[0]
    h, w, _ = SIZES[Path(r.path).name]
    assert r.probs.shape == (3, h, w) and r.mask.max() < 3
    np.testing.assert_allclose(r.probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(r.mask, r.probs.argmax(0))
    with Image.open(run.save_dir / f"{Path(r.path).stem}_mask.png") as m:
        assert m.mode == "P" and m.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
        np.testing.assert_array_equal(np.asarray(m), r.mask)
    with open(run.save_dir / "predictions.csv") as f:
        header = next(csv.reader(f))
    assert header == ["file", "width", "height", "share_c0", "share_c1", "share_c2", "seconds"]


def test_missing_arguments_are_explained(binary_ckpt):
    with pytest.raises(ValueError, match="weights="):
        mobileseg.predict(source="x.jpg")
    with pytest.raises(ValueError, match="source="):
        mobileseg.predict(weights=str(binary_ckpt))
