"""End-to-end training on tiny made-up data: run folder, metrics, resume, interruption, bad data."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import FAST, make_shapes_dataset
from PIL import Image

import mobileseg
from mobileseg.data import DataError
from mobileseg.errors import MissingFileError, NonFiniteLossError
from mobileseg.models import Segmenter
from mobileseg.models.checkpoint import load_checkpoint


def read_results(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=16)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    result = mobileseg.train(data=str(shapes), epochs=4, lr=3e-3, project=str(project), **FAST)
    return result


def test_loss_falls(trained):
    losses = [row["train/loss"] for row in trained.history]
    assert losses[-1] < losses[0] * 0.8, losses


def test_run_folder_complete_and_valid(trained):
    run = trained.save_dir
    for name in ("args.yaml", "results.csv", "results.png", "val_predictions.png", "README.md"):
        assert (run / name).is_file(), name
    rows = read_results(run)
    assert len(rows) == 4
    expected = {
        "epoch",
        "train/loss",
        "val/loss",
        "val/accuracy",
        "val/precision",
        "val/recall",
        "val/iou",
        "val/dice",
        "train/iou",
        "lr",
        "epoch_s",
        "img_s",
    }
    assert expected <= set(rows[0])
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    for png in ("results.png", "val_predictions.png"):
        with Image.open(run / png) as im:
            im.verify()
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["train"]["epochs"] == 4 and args["data"]["imgsz"] == [64, 64]
    assert args["dataset_info"]["split"]["mode"] == "random"
    assert "best epoch" in (run / "README.md").read_text().lower()


def test_best_checkpoint_reproduces_logged_metric(trained):
    ckpt = load_checkpoint(trained.best)
    best_row = next(r for r in read_results(trained.save_dir) if int(r["epoch"]) == ckpt["best_epoch"])
    assert float(best_row["val/iou"]) == pytest.approx(max(float(r["val/iou"]) for r in read_results(trained.save_dir)))
    model = Segmenter.from_checkpoint(trained.best)
    assert model.names == ["background", "foreground"] and tuple(model.imgsz) == (64, 64)
    out = mobileseg.val(
        weights=str(trained.best), project=str(trained.save_dir.parent.parent), verbose=False, workers=0, amp=False
    )  # fp32, as validation during training
    assert out["iou"] == pytest.approx(float(best_row["val/iou"]), abs=1e-4)
    folder = Path(out["save_dir"])
    for name in ("metrics.json", "per_image.csv", "confusion_matrix.png", "predictions.png", "worst.png"):
        assert (folder / name).is_file(), name


def test_same_seed_same_metrics(shapes, tmp_path):
    a = mobileseg.train(data=str(shapes), epochs=2, project=str(tmp_path), name="a", **FAST)
    b = mobileseg.train(data=str(shapes), epochs=2, project=str(tmp_path), name="b", **FAST)
    assert [r["val/iou"] for r in a.history] == [r["val/iou"] for r in b.history]
    assert [r["train/loss"] for r in a.history] == [r["train/loss"] for r in b.history]


@pytest.mark.parametrize("bf16_units", [True, False])
def test_cpu_precision_follows_the_hardware(shapes, tmp_path, monkeypatch, bf16_units):
    """bf16 autocast on CPUs with bf16 units (1.7-1.9x faster there), fp32 elsewhere or with amp=false."""
    from mobileseg.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: bf16_units)
    seen: list[torch.dtype] = []
    original = Segmenter.forward

    def spy(self, x):
        out = original(self, x)
        if self.training:
            seen.append(out.dtype)
        return out

    monkeypatch.setattr(Segmenter, "forward", spy)
    auto = mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="auto", **FAST)
    expected = torch.bfloat16 if bf16_units else torch.float32
    assert auto.precision == ("bfloat16 autocast" if bf16_units else "fp32") and set(seen) == {expected}
    assert auto.precision in (auto.save_dir / "README.md").read_text()
    assert all(math.isfinite(r["train/loss"]) for r in auto.history)
    seen.clear()
    off = mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), name="off", amp=False, **FAST)
    assert off.precision == "fp32" and set(seen) == {torch.float32}


def test_resume_continues_epoch_count_and_schedule(shapes, tmp_path):
    # A seed other than the default: the resumed run must keep the run's seed, not take the command's default.
    full = mobileseg.train(data=str(shapes), epochs=3, project=str(tmp_path), name="full", seed=7, **FAST)
    stopped = _train_until_epoch(shapes, tmp_path / "stopped", 3, 1, "seed=7")
    with pytest.raises(MissingFileError, match="is a folder without weights/last.pt"):
        mobileseg.train(resume=str(tmp_path), verbose=False)
    resumed = mobileseg.train(resume=str(stopped), verbose=False)  # the run folder: its weights/last.pt
    assert yaml.safe_load((resumed.save_dir / "args.yaml").read_text())["runtime"]["seed"] == 7
    assert resumed.save_dir.resolve() == stopped.resolve()
    rows, ref = read_results(stopped), read_results(full.save_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # Same schedule (lr per epoch) and, on the CPU with the same seed, the same metrics as the unbroken run.
    assert [float(r["lr"]) for r in rows] == pytest.approx([float(r["lr"]) for r in ref])
    assert [float(r["val/iou"]) for r in rows] == pytest.approx([float(r["val/iou"]) for r in ref], abs=1e-6)


def test_ema_weights_are_validated_saved_and_resumed(shapes, tmp_path):
    """ema=...: validation scores the average, best/last.pt hold it, and a killed run resumes to the same numbers."""
    full = mobileseg.train(data=str(shapes), epochs=3, lr=3e-3, ema=0.9, project=str(tmp_path), name="full", **FAST)
    last = load_checkpoint(full.last)
    assert last["ema"]["updates"] >= 3  # one per optimizer step
    averaged, raw = last["model"], last["train_model"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    # The logged val IoU of the last epoch is that of the averaged weights that last.pt's "model" holds.
    again = mobileseg.val(weights=str(full.last), amp=False, verbose=False)
    assert again["iou"] == pytest.approx(float(read_results(full.save_dir)[-1]["val/iou"]), abs=1e-6)
    assert "EMA, decay 0.9" in (full.save_dir / "README.md").read_text()
    stopped = _train_until_epoch(shapes, tmp_path / "stopped", 3, 1, "lr=3e-3", "ema=0.9")
    resumed = mobileseg.train(resume=str(stopped / "weights" / "last.pt"), verbose=False)
    rows, ref = read_results(resumed.save_dir), read_results(full.save_dir)
    assert [float(r["val/iou"]) for r in rows] == pytest.approx([float(r["val/iou"]) for r in ref], abs=1e-6)


def _train_until_epoch(data: Path, run: Path, epochs: int, stop_after: int, *extra: str) -> Path:
    """Train in a subprocess and SIGKILL it once ``stop_after`` epochs are saved in last.pt (mid next epoch)."""
    cmd = [
        sys.executable,
        "-m",
        "mobileseg",
        "train",
        f"data={data}",
        f"epochs={epochs}",
        f"project={run}",
        "name=exp",
        *(f"{k}={v}" for k, v in FAST.items()),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "train" / "exp" / "weights" / "last.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if last.is_file():
                try:
                    if load_checkpoint(last)["epoch"] >= stop_after:
                        break
                except Exception:  # being replaced right now
                    pass
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return run / "train" / "exp"


def test_sigkill_mid_epoch_then_resume(shapes, tmp_path):
    run = _train_until_epoch(shapes, tmp_path / "killed", epochs=3, stop_after=1)
    assert load_checkpoint(run / "weights" / "best.pt")["epoch"] >= 1  # best.pt intact after the kill
    result = mobileseg.train(resume=str(run / "weights" / "last.pt"), verbose=False)
    assert [int(r["epoch"]) for r in read_results(run)] == [1, 2, 3]
    assert result.epochs == 3
    Segmenter.from_checkpoint(run / "weights" / "best.pt")


def test_sigint_saves_exact_position_and_resume_completes(shapes, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mobileseg",
        "train",
        f"data={shapes}",
        "epochs=2",
        f"project={tmp_path}",
        "name=int",
        *(f"{k}={v}" for k, v in FAST.items() if k != "batch"),
        "batch=2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    run = tmp_path / "train" / "int"
    deadline = time.time() + 60
    while not (run / "args.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == 130, text
    assert "resume=" in text
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["epoch"] < 2
    result = mobileseg.train(resume=str(run / "weights" / "last.pt"), verbose=False)
    assert result.epochs == 2 and [int(r["epoch"]) for r in read_results(run)] == [1, 2]


@pytest.mark.parametrize("stop_at", ["mid", "last"])
def test_an_interrupted_epoch_reports_all_its_steps_after_resume(shapes, tmp_path, monkeypatch, stop_at):
    """Ctrl-C in epoch 1 (mid-way, or on its last step): after the resume, epoch 1's train figures are those of
    the unbroken run, not of the steps after the resume only (or NaN when none were left)."""
    from mobileseg.engine import trainer as trainer_mod

    full = mobileseg.train(data=str(shapes), epochs=2, project=str(tmp_path), name="full", **FAST)
    real = trainer_mod.Trainer._stop_requested
    calls = {"n": 0}

    def ctrl_c_at(self):  # called once per step: the n-th call is step n of the first epoch
        calls["n"] += 1
        target = 2 if stop_at == "mid" else self.steps_per_epoch
        self._interrupted = self._interrupted or calls["n"] == target
        return real(self)

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "_stop_requested", ctrl_c_at)
        stopped = mobileseg.train(data=str(shapes), epochs=2, project=str(tmp_path), name="stopped", **FAST)
    assert stopped.stopped == "interrupted"
    ckpt = load_checkpoint(stopped.last)
    assert ckpt["epoch"] == 0 and ckpt["step"] == (2 if stop_at == "mid" else calls["n"])
    mobileseg.train(resume=str(stopped.last), verbose=False)
    rows, ref = read_results(stopped.save_dir), read_results(full.save_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train/loss", "train/iou", "train/accuracy"):
        assert [float(r[key]) for r in rows] == pytest.approx([float(r[key]) for r in ref], rel=1e-5), key


def test_non_finite_loss_stops_and_keeps_last_good(shapes, tmp_path, monkeypatch):
    from mobileseg.engine import loss as loss_mod

    real = loss_mod.SegmentationLoss.forward
    calls = {"n": 0}

    def flaky(self, logits, target):
        calls["n"] += 1
        value = real(self, logits, target)
        return value * math.nan if calls["n"] > 5 and self.training else value

    monkeypatch.setattr(loss_mod.SegmentationLoss, "forward", flaky)
    with pytest.raises(NonFiniteLossError, match="last good state"):
        mobileseg.train(data=str(shapes), epochs=3, project=str(tmp_path), name="nan", **FAST)
    last = load_checkpoint(tmp_path / "train" / "nan" / "weights" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    # In the first epoch nothing is saved yet: the error must not promise a last.pt, and no folder is left.
    calls["n"] = 5
    with pytest.raises(NonFiniteLossError, match="no epoch had been saved yet"):
        mobileseg.train(data=str(shapes), epochs=3, project=str(tmp_path), name="nan1", **FAST)
    assert not (tmp_path / "train" / "nan1").exists()


@pytest.mark.parametrize("best", ["val", "last"])
def test_best_pt_holds_the_best_val_epoch_or_the_final_one(shapes, tmp_path, monkeypatch, best):
    from mobileseg.engine import trainer as trainer_mod

    real, calls = trainer_mod.evaluate, {"n": 0}

    def falling(*args, **kwargs):  # val IoU 0.9, 0.8, 0.7: the first epoch is the best by val
        out = real(*args, **kwargs)
        calls["n"] += 1
        out.metrics["iou"] = 1.0 - 0.1 * calls["n"]
        return out

    monkeypatch.setattr(trainer_mod, "evaluate", falling)
    result = mobileseg.train(data=str(shapes), epochs=3, best=best, project=str(tmp_path), name=best, **FAST)
    ckpt, last = load_checkpoint(result.best), load_checkpoint(result.last)
    assert result.best_epoch == ckpt["best_epoch"] == (1 if best == "val" else 3)
    same = all(torch.equal(ckpt["model"][k], last["model"][k]) for k in last["model"])
    assert same == (best == "last")
    card = (result.save_dir / "README.md").read_text()
    assert ("`best=last`" in card) == (best == "last")


def test_best_last_with_patience_is_a_config_error(shapes, tmp_path):
    from mobileseg.errors import ConfigError

    with pytest.raises(ConfigError, match="best=last"):
        mobileseg.train(data=str(shapes), epochs=3, best="last", patience=2, project=str(tmp_path), **FAST)


def test_final_fit_without_a_val_split(tmp_path):
    """``val_fraction: 0``: every train image trains, no val columns, best.pt is the final epoch; patience refused."""
    from mobileseg.errors import ConfigError

    root = make_shapes_dataset(tmp_path / "fit", n=10)
    (root / "tr.txt").write_text("\n".join(f"s{i:02d}" for i in range(8)))
    (root / "te.txt").write_text("s08\ns09\n")
    doc = {"path": ".", "splits": {"train": "tr.txt", "test": "te.txt"}, "val_fraction": 0}
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    data = str(root / "data.yaml")
    result = mobileseg.train(data=data, epochs=2, name="fit", project=str(tmp_path / "runs"), **FAST)
    assert result.best_epoch == 2 and result.best_metrics == {}
    assert not any(k.startswith("val/") for row in result.history for k in row)
    assert {r["val/iou"] for r in read_results(result.save_dir)} == {""}
    best, last = load_checkpoint(result.best), load_checkpoint(result.last)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    assert (result.save_dir / "results.png").is_file()
    assert not (result.save_dir / "val_predictions.png").exists()
    card = (result.save_dir / "README.md").read_text()
    assert "8 train / 0 val images" in card and "no val split" in card
    metrics = mobileseg.test(weights=str(result.best), project=str(tmp_path / "t"), **FAST)
    assert 0 <= metrics["iou"] <= 1  # the test split is untouched by a final fit
    with pytest.raises(ConfigError, match="no val split"):
        mobileseg.train(data=data, epochs=2, patience=1, project=str(tmp_path / "runs"), **FAST)


def test_multiclass_with_ignore(tmp_path):
    root = make_shapes_dataset(tmp_path / "mc", n=12, classes=3)
    # Paint an ignore border (value 9) into every mask, mapped to ignore in the dataset YAML.
    for p in (root / "masks").iterdir():
        m = np.array(Image.open(p))
        m[:, :4] = 9
        Image.fromarray(m).save(p)
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": ".",
                "names": ["bg", "red", "green"],
                "mask_values": {0: 0, 1: 1, 2: 2, 9: "ignore"},
            }
        )
    )
    result = mobileseg.train(data=str(root / "data.yaml"), epochs=2, project=str(tmp_path), **FAST)
    assert Segmenter.from_checkpoint(result.best).num_classes == 3
    assert all(0 <= r["val/iou"] <= 1 for r in result.history)


def test_bad_data_stops_before_any_work(tmp_path):
    root = make_shapes_dataset(tmp_path / "bad", n=6)
    (root / "images" / "orphan.png").write_bytes((root / "images" / "s00.png").read_bytes())
    with pytest.raises(DataError, match="orphan"):
        mobileseg.train(data=str(root), epochs=1, project=str(tmp_path / "runs"), **FAST)
    assert not (tmp_path / "runs").exists()


def test_binary_head_starts_at_the_train_foreground_prior(shapes, tmp_path):
    """A fresh binary run's refine head starts at the train foreground's log-odds, with any loss (loss=bce has no
    'auto' that would count pixels otherwise); the tutorial decoder and a multi-class head keep their init."""
    from mobileseg.engine.callbacks import Callback
    from mobileseg.engine.loss import count_class_pixels
    from mobileseg.engine.setup import init_from_train_split

    seen: dict[str, object] = {}

    class Grab(Callback):
        def on_train_start(self, trainer) -> None:
            seen["bias"] = trainer.model.decoder.head.bias.detach().clone()
            seen["counts"] = count_class_pixels(trainer.train_base)

    mobileseg.train(data=str(shapes), epochs=1, loss="bce", project=str(tmp_path), callbacks=[Grab()], **FAST)
    counts = seen["counts"]
    share = counts[1] / counts.sum()
    assert 0.02 < share < 0.98
    assert torch.sigmoid(seen["bias"]).item() == pytest.approx(share, abs=1e-5)

    tutorial = Segmenter(1, encoder_weights=None, decoder="tutorial")
    before = tutorial.decoder.head.bias.detach().clone()
    init_from_train_split(tutorial, None, np.array([90, 10]))
    assert torch.equal(tutorial.decoder.head.bias, before)  # the tutorial's layout keeps the tutorial's init

    multi = Segmenter(3, encoder_weights=None)
    init_from_train_split(multi, None, np.array([50, 30, 20]))
    assert torch.equal(multi.decoder.head.bias, torch.zeros(3))


def test_a_callback_gets_the_trainer_state_it_is_promised(shapes, tmp_path):
    """User callbacks are written against ``TrainerState`` (the contract below the trainer): the trainer a real run
    passes has every member it names, at every event, and the events come in the documented order."""
    from mobileseg.engine.callbacks import Callback, TrainerState

    events: list[str] = []

    class Record(Callback):
        def _seen(self, name: str, trainer) -> None:
            assert isinstance(trainer, TrainerState), name  # hasattr of every member the protocol declares
            events.append(name)

        def on_train_start(self, trainer) -> None:
            self._seen("start", trainer)

        def on_epoch_start(self, trainer, epoch) -> None:
            self._seen(f"epoch{epoch}", trainer)

        def on_plots(self, trainer, epoch, paths) -> None:
            assert all(Path(p).is_file() for p in paths.values())
            self._seen(f"plots{epoch}", trainer)

        def on_epoch_end(self, trainer, row) -> None:
            assert trainer.history[-1] is row and trainer.val_model() is not None
            self._seen(f"end{int(row['epoch'])}", trainer)

        def on_train_end(self, trainer, result) -> None:
            self._seen("done", trainer)

    mobileseg.train(data=str(shapes), epochs=1, project=str(tmp_path), callbacks=[Record()], **FAST)
    assert events == ["start", "plots0", "epoch0", "end1", "plots1", "done"]
    assert not isinstance(object(), TrainerState)


def test_optimizer_is_fused_adamw_over_four_groups():
    """One fused kernel over all parameters (PyTorch's CPU default loops over them in Python), same AdamW rule."""
    from mobileseg.config import load_config
    from mobileseg.engine.setup import build_optimizer

    cfg = load_config(overrides=["lr=0.01", "encoder_lr_mult=0.1", "encoder_weights=imagenet"])
    model = Segmenter(1, encoder_weights=None)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert lrs["encoder"][0] == pytest.approx(0.001) and lrs["decoder"][0] == pytest.approx(0.01)
    assert lrs["encoder/no_decay"][1] == 0.0 and lrs["decoder"][1] == cfg.train.weight_decay
    reference = torch.optim.AdamW(
        [
            {k: v for k, v in g.items() if k not in ("params", "fused", "foreach")}
            | {"params": [p.detach().clone().requires_grad_() for p in g["params"]]}
            for g in opt.param_groups
        ],
        fused=False,
    )
    mine = [p for g in opt.param_groups for p in g["params"]]
    theirs = [q for g in reference.param_groups for q in g["params"]]
    for p, q in zip(mine, theirs, strict=True):
        p.grad = torch.full_like(p, 0.5)
        q.grad = torch.full_like(q, 0.5)
    with torch.no_grad():
        opt.step()
        reference.step()
    for p, q in zip(mine, theirs, strict=True):
        torch.testing.assert_close(p, q)  # the same update as the per-parameter loop


def test_init_starts_a_new_run_from_every_weight_of_a_trained_model(trained, shapes, tmp_path):
    """``init=`` (fine-tuning, a second stage): the new run's model is the file's, tensor for tensor, in a new
    folder whose epochs count from 1; the model card says where it started."""
    from mobileseg.config import resolve_config
    from mobileseg.engine.trainer import Trainer

    cfg = resolve_config(None, {"data": str(shapes), "init": str(trained.last), "project": str(tmp_path), **FAST})
    trainer = Trainer(cfg)
    saved = load_checkpoint(trained.last)["model"]
    assert trainer.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in saved.items())
    assert "init: weights from" in trainer.init_note and "afresh" not in trainer.init_note
    assert "names differ" not in trainer.init_note  # the same dataset: the same classes
    assert trainer.cfg.model.encoder_weights == "none"  # nothing loaded besides the file (args.yaml says so)
    run = mobileseg.train(data=str(shapes), init=str(trained.last), epochs=1, project=str(tmp_path), name="ft", **FAST)
    assert [r["epoch"] for r in run.history] == [1]
    assert run.save_dir != trained.save_dir
    assert f"Started from: `{trained.last}`" in (run.save_dir / "README.md").read_text()
    # It goes on from where the file's run stopped (train loss 0.45 -> 0.19 over its 4 epochs; 0.18 here), not
    # from the first epoch's loss of a model trained from scratch.
    first, last = trained.history[0]["train/loss"], trained.history[-1]["train/loss"]
    assert run.history[0]["train/loss"] < (first + last) / 2


def test_init_keeps_the_file_architecture_and_renews_a_head_for_other_classes(tmp_path):
    """A binary file into a 3-class dataset: every tensor but the head's is copied; the file's decoder settings
    (here a context branch the command did not ask for) become the run's; a key given against the file is refused."""
    from mobileseg.config import resolve_config
    from mobileseg.engine.trainer import Trainer
    from mobileseg.errors import ConfigError

    torch.manual_seed(0)
    source = Segmenter(1, decoder_context=8)
    path = tmp_path / "binary.pt"
    torch.save(source.to_checkpoint(names=["background", "thing"], imgsz=64), path)
    root = make_shapes_dataset(tmp_path / "three", n=8, classes=3)
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "names": ["bg", "red", "green"]}))
    three = root / "data.yaml"
    cfg = resolve_config(None, {"data": str(three), "init": str(path), "project": str(tmp_path), **FAST})
    trainer = Trainer(cfg)
    assert trainer.cfg.model.decoder_context == 8 and trainer.model.num_classes == 3
    own = trainer.model.state_dict()
    kept = [k for k in own if not k.startswith("decoder.head.")]
    assert kept and all(torch.equal(own[k], source.state_dict()[k]) for k in kept)
    assert own["decoder.head.weight"].shape[0] == 3
    assert "the head starts afresh: the file has 1 output(s), this data 3" in trainer.init_note
    # A head of the same class count is copied by position; the log line says when the names differ.
    renamed = tmp_path / "renamed.pt"
    torch.save(Segmenter(3).to_checkpoint(names=["sky", "road", "car"], imgsz=64), renamed)
    other = Trainer(resolve_config(None, {"data": str(three), "init": str(renamed), **FAST}))
    assert "copied by position although the class names differ (the file: sky, road, car" in other.init_note
    for key in ({"decoder": "tutorial"}, {"decoder_context": 16}, {"channels": 1}, {"encoder_weights": "imagenet"}):
        with pytest.raises(ConfigError, match="another architecture"):
            Trainer(resolve_config(None, {"data": str(three), "init": str(path), **FAST, **key}))
    with pytest.raises(MissingFileError):
        Trainer(resolve_config(None, {"data": str(three), "init": str(tmp_path / "nope.pt"), **FAST}))
