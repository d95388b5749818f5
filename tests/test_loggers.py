"""TensorBoard and MLflow loggers, driven by a fake trainer for 2 epochs and read back from what they wrote.

``read_tensorboard_scalars`` is meant for reuse (e.g. an end-to-end test comparing a real run's event files with
its results.csv).
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mobileseg.config import Config, ConfigError, load_config
from mobileseg.engine.loggers import (
    Callback,
    MlflowLogger,
    TensorBoardLogger,
    build_loggers,
    default_tracking_uri,
    flatten_config,
)

ROWS = [
    {
        "epoch": 1,
        "train/loss": 0.71,
        "train/iou": 0.31,
        "val/loss": 0.65,
        "val/iou": 0.42,
        "val/dice": math.nan,  # a metric can be undefined (no positives yet): it must not break either logger
        "lr": 1e-3,
        "epoch_s": 3.5,
        "img_s": 12.25,
    },
    {
        "epoch": 2,
        "train/loss": 0.52,
        "train/iou": 0.44,
        "val/loss": 0.49,
        "val/iou": 0.57,
        "val/dice": 0.66,
        "lr": 5e-4,
        "epoch_s": 3.25,
        "img_s": 13.5,
    },
]


def read_tensorboard_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files directly in ``logdir``: ``{tag: [(step, value), ...]}`` in step order.

    Values are float32 as TensorBoard stores them: compare with ``pytest.approx`` (or ``np.float32``).
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _fake_trainer(tmp_path: Path, **runtime: object) -> SimpleNamespace:
    cfg = load_config(overrides={"project": str(tmp_path / "runs"), "epochs": 2, "serve.token": "s3cret", **runtime})
    save_dir = tmp_path / "runs" / "train" / "exp"
    (save_dir / "weights").mkdir(parents=True)
    (save_dir / "weights" / "best.pt").write_bytes(b"weights")
    (save_dir / "results.csv").write_text("epoch\n1\n2\n")
    spec = SimpleNamespace(names=["background", "pet"], num_classes=2, binary=True)
    return SimpleNamespace(cfg=cfg, save_dir=save_dir, model=None, spec=spec)


def _plots(save_dir: Path, epoch: int) -> dict[str, Path]:
    grid = np.zeros((40, 60, 3), np.uint8)
    grid[:, : 10 * epoch] = 255  # differs per epoch
    cm = np.full((30, 30, 4), 128, np.uint8)  # RGBA, as matplotlib saves: the alpha must be dropped
    Image.fromarray(grid).save(save_dir / "val_predictions.png")
    Image.fromarray(cm).save(save_dir / "confusion_matrix.png")
    return {"val_predictions": save_dir / "val_predictions.png", "confusion_matrix": save_dir / "confusion_matrix.png"}


def _drive(logger: Callback, trainer: SimpleNamespace) -> SimpleNamespace:
    """What the trainer does: start, 2 epochs of rows and plots, end."""
    logger.on_train_start(trainer)
    for row in ROWS:
        logger.on_epoch_end(trainer, dict(row))
        logger.on_plots(trainer, int(row["epoch"]), _plots(trainer.save_dir, int(row["epoch"])))
    result = SimpleNamespace(
        best=trainer.save_dir / "weights" / "best.pt",
        save_dir=trainer.save_dir,
        best_metrics={"loss": 0.49, "iou": 0.57, "dice": 0.66},
        best_epoch=2,
        epochs=2,
    )
    logger.on_train_end(trainer, result)
    return result


# ---------------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_scalars_images_config(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    trainer = _fake_trainer(tmp_path, tensorboard=True)
    (logger,) = build_loggers(trainer.cfg)
    assert isinstance(logger, TensorBoardLogger)
    _drive(logger, trainer)

    scalars = read_tensorboard_scalars(trainer.save_dir)
    for key in ROWS[0]:
        if key == "epoch":
            continue
        got = scalars[key]
        assert [s for s, _ in got] == [1, 2], key
        for (_, value), row in zip(got, ROWS, strict=True):
            want = np.float32(row[key])
            assert (math.isnan(value) and math.isnan(want)) or value == want, key
    assert scalars["best/iou"] == [(2, pytest.approx(0.57))]

    acc = EventAccumulator(str(trainer.save_dir), size_guidance={IMAGES: 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"val_predictions", "confusion_matrix"}
    grids = acc.Images("val_predictions")
    assert [(e.step, e.width, e.height) for e in grids] == [(1, 60, 40), (2, 60, 40)]
    assert grids[0].encoded_image_string != grids[1].encoded_image_string  # each epoch's own picture
    decoded = np.asarray(Image.open(io.BytesIO(grids[1].encoded_image_string)))
    assert decoded.shape == (40, 60, 3) and decoded[0, 19].tolist() == [255] * 3 and decoded[0, 20].tolist() == [0] * 3

    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "epochs: 2" in text and "s3cret" not in text  # the serve token is never logged
    hp = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.epochs"].number_value == 2 and start.hparams["data.imgsz"].string_value == "[224, 224]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"best/loss", "best/iou", "best/dice"}


def test_tensorboard_resume_purges_redone_epochs(tmp_path: Path) -> None:
    trainer = _fake_trainer(tmp_path)
    _drive(TensorBoardLogger(), trainer)
    trainer.start_epoch = 1  # resumed after epoch 1: epoch 2 is done again with other numbers
    logger = TensorBoardLogger()
    logger.on_train_start(trainer)
    logger.on_epoch_end(trainer, {**ROWS[1], "val/iou": 0.6})
    logger.writer.close()
    assert read_tensorboard_scalars(trainer.save_dir)["val/iou"] == [
        (1, pytest.approx(0.42)),
        (2, pytest.approx(0.6)),
    ]


def test_loggers_do_nothing_off_the_main_process(tmp_path: Path) -> None:
    trainer = _fake_trainer(tmp_path)
    trainer.dist = SimpleNamespace(main=False)
    _drive(TensorBoardLogger(), trainer)
    _drive(MlflowLogger(tracking_uri="sqlite:///never-created.db"), trainer)
    assert not list(trainer.save_dir.glob("events.out.tfevents.*")) and not Path("never-created.db").exists()


# -------------------------------------------------------------------------------------------------- MLflow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # mlflow's, not ours
def test_mlflow_default_store_params_metrics_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    trainer = _fake_trainer(tmp_path, mlflow=True)
    (logger,) = build_loggers(trainer.cfg)
    assert isinstance(logger, MlflowLogger)
    _drive(logger, trainer)

    # default store: mlflow.db beside the project folder, artifacts in mlartifacts/ beside it
    uri = default_tracking_uri(trainer.cfg)
    assert uri == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}" and (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mobileseg")
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert (trainer.save_dir / "mlflow_run_id.txt").read_text().strip() == run_id
    assert run.info.run_name == "exp" and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    params = run.data.params
    flat = flatten_config(trainer.cfg)
    assert set(flat) <= set(params) and params["train.epochs"] == "2" and params["data.imgsz"] == "[224, 224]"
    assert params["runtime.project"] == str(tmp_path / "runs") and params["dataset.names"] == '["background", "pet"]'
    assert not any(k.startswith("serve.") for k in params) and "s3cret" not in params.values()

    for key in ROWS[0]:
        if key == "epoch":
            continue
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1, 2], key  # exactly one value per epoch
        for m, row in zip(history, ROWS, strict=True):
            assert (math.isnan(m.value) and math.isnan(row[key])) or m.value == row[key], key
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "best/iou")] == [(2, 0.57)]

    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"weights", "results.csv", "val_predictions.png", "confusion_matrix.png", "plots"} <= listed
    assert {a.path for a in client.list_artifacts(run_id, "weights")} == {"weights/best.pt"}
    assert {a.path for a in client.list_artifacts(run_id, "plots")} == {
        "plots/val_predictions.png",
        "plots/confusion_matrix.png",
    }


def test_mlflow_tracking_uri_and_experiment_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$MLFLOW_TRACKING_URI wins over the default store (here a file store, which mlflow 3 accepts only when told)."""
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "elsewhere" / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "pets")
    trainer = _fake_trainer(tmp_path)
    logger = MlflowLogger()
    logger.on_train_start(trainer)
    logger.on_epoch_end(trainer, dict(ROWS[0]))
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("pets").experiment_id])
    assert run.data.metrics["val/iou"] == 0.42 and run.info.status == "RUNNING"

    # a store mlflow refuses -> one ConfigError naming it, not an MlflowException traceback
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "refused").as_uri())  # mlflow caches stores per URI
    with pytest.raises(ConfigError, match="cannot use the MLflow store file://") as err:
        MlflowLogger().on_train_start(trainer)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------- factory
def test_build_loggers_off_by_default_and_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_loggers(Config()) == []
    cfg = load_config(overrides=["tensorboard=true", "mlflow=true"])
    assert [type(cb) for cb in build_loggers(cfg)] == [TensorBoardLogger, MlflowLogger]

    for name in ("tensorboard", "mlflow", "sqlalchemy"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec then raises ValueError: treated as missing
    with pytest.raises(ConfigError, match=r"^tensorboard=true needs the tensorboard package: pip install 'mobileseg\["):
        build_loggers(load_config(overrides=["tensorboard=true"]))
    with pytest.raises(ConfigError, match=r"^mlflow=true needs the mlflow package: pip install 'mobileseg\[mlflow\]'"):
        build_loggers(load_config(overrides=["mlflow=true"]))
    monkeypatch.delitem(sys.modules, "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="needs sqlalchemy and alembic"):
        build_loggers(load_config(overrides=["mlflow=true"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # a server: no local database needed
    assert [type(cb) for cb in build_loggers(load_config(overrides=["mlflow=true"]))] == [MlflowLogger]


def test_a_real_run_logs_to_tensorboard_what_results_csv_says(tmp_path):
    """End to end: a 1-epoch training with tensorboard=true; every results.csv value is the event file's scalar."""
    pytest.importorskip("tensorboard")
    import csv

    from helpers import FAST, make_shapes_dataset

    import mobileseg

    data = make_shapes_dataset(tmp_path / "shapes", n=10)
    run = mobileseg.train(data=str(data), epochs=1, tensorboard=True, project=str(tmp_path / "runs"), **FAST)
    scalars = read_tensorboard_scalars(run.save_dir)
    rows = list(csv.DictReader((run.save_dir / "results.csv").open()))
    assert len(rows) == 1
    checked = 0
    for column, text in rows[0].items():
        if column == "epoch" or not text or text == "nan":
            continue
        assert scalars[column] == [(1, pytest.approx(float(text), rel=1e-5, abs=1e-7))], column
        checked += 1
    assert checked >= 10  # losses, every train/val metric, lr, timing
    # Every picture the run folder gets reaches TensorBoard too, the data pictures drawn before epoch 1 included
    # (they were once emitted before the logger had opened its writer, and lost).
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(run.save_dir), size_guidance={IMAGES: 0})
    acc.Reload()
    steps = {tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]}
    assert steps == {"train_batch": [0], "labels": [0], "results": [1], "val_predictions": [1]}
