"""The faults that used to slip through: each gets a one-line error or the right behaviour, and loses nothing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import FAST, make_checkpoint, make_shapes_dataset
from PIL import Image

import mobileseg
from mobileseg.cli import main
from mobileseg.errors import ConfigError, DiskFullError, TrainingError
from mobileseg.models.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=12)


def _one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_training_prints_the_dataset_checks_warnings(tmp_path, capsys, one_thread):
    """Trimap-style masks (1/2/3, no 0) with no mapping are all foreground: check-data warned, training did not."""
    root = make_shapes_dataset(tmp_path / "trimap", n=10)
    for mask in (root / "masks").iterdir():
        arr = np.asarray(Image.open(mask))
        Image.fromarray(np.where(arr > 0, 1, 2).astype(np.uint8)).save(mask)  # values 1 and 2, never 0
    mobileseg.train(data=str(root), epochs=1, project=str(tmp_path / "runs"), **{**FAST, "verbose": True})
    err = capsys.readouterr().err
    assert "everything is foreground" in err


def test_freeze_bn_without_pretrained_weights_warns(shapes, tmp_path, capsys, one_thread):
    """Frozen BatchNorm statistics are the pretrained ones; with a random encoder they would stay at 0 / 1."""
    runs = str(tmp_path / "runs")
    mobileseg.train(data=str(shapes), epochs=1, freeze_bn=True, project=runs, name="a", **{**FAST, "verbose": True})
    assert "freeze_bn=true with encoder_weights=none" in capsys.readouterr().err
    mobileseg.train(data=str(shapes), epochs=1, project=runs, name="b", **{**FAST, "verbose": True})
    assert "freeze_bn" not in capsys.readouterr().err


def test_training_from_a_worker_thread(shapes, tmp_path, one_thread):
    """mobileseg.train from a thread other than the main one (a notebook's background job, a web app's worker):
    Python lets only the main thread set the Ctrl-C handler, so the run trains without it instead of failing."""
    import threading

    results, errors = [], []

    def job() -> None:
        try:
            results.append(mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="t", **FAST))
        except BaseException as e:  # noqa: BLE001 - the test reports whatever the thread raised
            errors.append(e)

    worker = threading.Thread(target=job)
    worker.start()
    worker.join(timeout=300)
    assert not errors, errors
    assert results and results[0].epochs == 1 and results[0].best.is_file()


def test_resume_after_the_classes_changed_is_one_line(tmp_path, capsys, one_thread):
    root = make_shapes_dataset(tmp_path / "data", n=12)
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["background", "shape"]}))
    run = mobileseg.train(data=str(root), epochs=1, project=str(tmp_path / "runs"), name="r", **FAST)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"names": ["background", "shape", "other"], "mask_values": {0: 0, 255: 1}})
    )
    with pytest.raises(TrainingError, match="3 .*classes|classes it started with"):
        mobileseg.train(resume=str(run.last), **FAST)
    assert main(["train", f"resume={run.last}", "workers=0"]) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and "classes" in err


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "model_args": {}}, path)
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="no space left"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "model_args": {}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_a_full_disk_reported_by_torch_as_unexpected_pos(tmp_path, monkeypatch):
    """torch's zip writer reports ENOSPC as "[enforce fail at inline_container.cc] ... unexpected pos"."""
    import os as os_mod

    def torn(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4416 vs 4358")

    class NoRoom:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", torn)
    monkeypatch.setattr(os_mod, "statvfs", lambda _: NoRoom())
    with pytest.raises(DiskFullError):
        save_checkpoint({"model": {}, "model_args": {}}, tmp_path / "best.pt")


@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_a_corrupt_exported_model_is_one_line(tmp_path, capsys, suffix):
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for command in (["predict", f"weights={bad}", f"source={image}"], ["benchmark", f"weights={bad}"]):
        assert main([*command, f"project={tmp_path / 'runs'}"]) == 1
        err = capsys.readouterr().err
        assert _one_line(err) and str(bad) in err and "corrupt" in err


def test_resume_with_more_epochs_trains_longer_and_says_so(shapes, tmp_path, capsys, one_thread):
    run = mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="r", **FAST)
    longer = mobileseg.train(resume=str(run.last), epochs=2, **{**FAST, "verbose": True})
    assert [r["epoch"] for r in longer.history] == [1, 2]
    assert "extending the run from 1 to 2 epochs" in capsys.readouterr().out
    assert load_checkpoint(longer.last)["config"]["train"]["epochs"] == 2
    with pytest.raises(ConfigError, match="already completed 2 epochs"):
        mobileseg.train(resume=str(longer.last), epochs=1, **FAST)


def test_imgsz_32_with_batch_1_is_refused_before_any_folder(shapes, tmp_path, capsys):
    args = ["train", f"data={shapes}", "imgsz=32", "batch=1", "encoder_weights=none", f"project={tmp_path}"]
    assert main([*args, "workers=0", "cache=none"]) == 1
    err = capsys.readouterr().err
    assert _one_line(err) and "batch" in err and "imgsz" in err
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())


def test_batchnorm_check_counts_the_images_each_process_gets():
    """DistributedSampler gives every rank ceil(n / world) images: 9 images on 2 processes are 5 each, so batch 4
    leaves a last batch of 1, which BatchNorm cannot train at 32x32 (1 value per channel at 1/32 scale)."""
    from mobileseg.engine.setup import check_batchnorm_values

    check_batchnorm_values((32, 32), batch=4, n_train=8, world=2)  # 4 per rank: no short last batch
    with pytest.raises(ConfigError, match="last batch of 1"):
        check_batchnorm_values((32, 32), batch=4, n_train=9, world=2)


def test_a_run_that_fails_early_leaves_no_empty_folder(shapes, tmp_path, monkeypatch):
    from mobileseg.engine import trainer as trainer_mod

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated failure in the first epoch")

    monkeypatch.setattr(trainer_mod.Trainer, "_train_epoch", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="gone", **FAST)
    assert not (tmp_path / "train" / "gone").exists()


def test_exist_ok_says_when_it_replaces_an_earlier_best(shapes, tmp_path, capsys, one_thread):
    mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="same", **FAST)
    capsys.readouterr()
    mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="same", exist_ok=True, **FAST)
    assert "already holds a best.pt" in capsys.readouterr().err


def test_a_checkpoint_without_training_state_cannot_be_resumed(tmp_path):
    ckpt = make_checkpoint(tmp_path / "best.pt")
    with pytest.raises(TrainingError, match="no training state"):
        mobileseg.train(resume=str(ckpt), **FAST)


def test_text_files_in_another_encoding_get_one_line_errors(shapes, tmp_path, capsys):
    """A dataset YAML, a config YAML, a split list or a predict source list saved as cp1252 (say, by an old Windows
    editor) is named in a one-line error, not a UnicodeDecodeError traceback."""
    latin = "# végétation\n".encode("cp1252")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_bytes(latin + f"path: {shapes}\n".encode())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(latin + b"epochs: 1\n")
    split_yaml = tmp_path / "split.yaml"
    (tmp_path / "train.txt").write_bytes(latin + b"0\n")
    split_yaml.write_text(f"path: {shapes}\nsplits: {{train: {tmp_path / 'train.txt'}}}\n")
    sources = tmp_path / "sources.txt"
    sources.write_bytes(latin)
    model = make_checkpoint(tmp_path / "m.pt")
    for argv, name in (
        (["check-data", f"data={data_yaml}"], "data.yaml"),
        (["check-data", f"data={split_yaml}"], "train.txt"),
        (["train", f"cfg={cfg}"], "cfg.yaml"),
        (["predict", f"weights={model}", f"source={sources}", f"project={tmp_path}"], "sources.txt"),
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and name in err.splitlines()[0], err  # YAML may add its position lines


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_checkpoints_get_the_usual_file_mode(tmp_path):
    """Atomic saves go through a temp file, which mkstemp creates as 0600: the checkpoint must still get the mode
    any other file of the run gets (0644 under the usual umask), or another user could not serve or test it."""
    path = save_checkpoint({"model": {}}, tmp_path / "best.pt")
    (tmp_path / "results.csv").write_text("epoch\n")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "results.csv").stat().st_mode)
