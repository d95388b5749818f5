"""Experiment trackers fed by the trainer's callbacks: TensorBoard and MLflow.

Both are optional: ``tensorboard=true`` / ``mlflow=true`` (``runtime`` section) turn them on, and
:func:`build_loggers` refuses in one line, before training starts, when the package is missing. They only ever
run on the main process (rank 0) of a distributed run.

What each receives (the trainer calls the four hooks of :class:`Callback`):

* every number of the ``results.csv`` row (``train/loss``, ``val/iou``, ..., ``lr``, ``epoch_s``, ``img_s``)
  with ``step = epoch`` under the same names as the CSV columns, so a chart and the CSV always agree;
* the plots the trainer just wrote (``val_predictions``, ``confusion_matrix``: images in TensorBoard, files in
  MLflow's ``plots/``);
* the resolved config (``model``, ``data``, ``train`` and ``runtime`` sections, never ``serve``, which can hold
  a token): TensorBoard gets it as text at the start and as hparams (with the best epoch's metrics as
  ``best/<metric>``) at the end; MLflow as params (``train.lr``, ``data.imgsz``, ...) at the start;
* MLflow also gets the whole run folder (weights, plots, CSV, args.yaml) as artifacts at the end.

Where things go:

* TensorBoard: event files in the run folder itself, so ``tensorboard --logdir runs/train`` lists the runs as
  ``exp``, ``exp2``, ... A resumed run drops the events it re-does (``purge_step``).
* MLflow: ``$MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///...``, or ``file:///...``, which mlflow >= 3
  only accepts with ``MLFLOW_ALLOW_FILE_STORE=true``). Otherwise a local SQLite store ``mlflow.db`` beside the
  project folder (``Path(project).parent``: with the default ``project=runs`` that is the working folder, where
  ``mlflow ui`` looks by default) and artifacts in ``mlartifacts/`` beside it. SQLite, not the ``mlruns/`` file
  store: mlflow 3 refuses the file store unless told to, and it is frozen ("maintenance mode"). Experiment:
  ``$MLFLOW_EXPERIMENT_NAME``, else ``mobileseg``; run name: the run folder's name.

Example:
    >>> from mobileseg.config import load_config
    >>> loggers = build_loggers(load_config(overrides=["tensorboard=true"]))  # doctest: +SKIP
    >>> [type(cb).__name__ for cb in loggers]  # doctest: +SKIP
    ['TensorBoardLogger']
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mobileseg.engine.callbacks import Callback
from mobileseg.errors import ConfigError

if TYPE_CHECKING:
    from mobileseg.config import Config

LOGGED_SECTIONS = ("model", "data", "train", "runtime")  # what defines a training run; 'serve' may hold a token
DEFAULT_EXPERIMENT = "mobileseg"


def build_loggers(cfg: Config) -> list[Callback]:
    """The loggers ``cfg`` asks for (``runtime.tensorboard``, ``runtime.mlflow``), checked before training starts.

    Args:
        cfg: the resolved config.

    Returns:
        Zero, one or two callbacks, to pass to the trainer.

    Raises:
        ConfigError: a logger is on but its package is not installed (one line with the ``pip install``).

    Example:
        >>> from mobileseg.config import Config
        >>> build_loggers(Config())
        []
    """
    loggers: list[Callback] = []
    if cfg.runtime.tensorboard:
        if not _installed("tensorboard"):
            raise ConfigError("tensorboard=true needs the tensorboard package: pip install 'mobileseg[tensorboard]'")
        loggers.append(TensorBoardLogger())
    if cfg.runtime.mlflow:
        if not _installed("mlflow"):
            raise ConfigError("mlflow=true needs the mlflow package: pip install 'mobileseg[mlflow]'")
        if not os.environ.get("MLFLOW_TRACKING_URI") and not (_installed("sqlalchemy") and _installed("alembic")):
            raise ConfigError(
                "mlflow=true with the default local store (mlflow.db, SQLite) needs sqlalchemy and alembic: "
                "pip install 'mobileseg[mlflow]', or set $MLFLOW_TRACKING_URI to a tracking server"
            )
        loggers.append(MlflowLogger())
    return loggers


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def _is_main(trainer: Any) -> bool:
    """Only rank 0 logs (a trainer without ``dist`` is a single process)."""
    return bool(getattr(getattr(trainer, "dist", None), "main", True))


def flatten_config(cfg: Config, sections: Iterable[str] = LOGGED_SECTIONS) -> dict[str, Any]:
    """``{'train.lr': 0.001, 'data.imgsz': [224, 224], ...}`` for the given sections of ``cfg``.

    Example:
        >>> from mobileseg.config import Config
        >>> flatten_config(Config())["train.epochs"]
        30
    """
    doc = cfg.to_dict()
    return {f"{s}.{k}": v for s in sections for k, v in doc[s].items()}


def _numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's values to chart: every number except the epoch itself (it is the step)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float | np.number) and not isinstance(v, bool)
    }


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------- TensorBoard
class TensorBoardLogger(Callback):
    """Scalars, plot images, config text and hparams into TensorBoard event files.

    Args:
        log_dir: where the event files go; default: the run folder (``trainer.save_dir``).

    Example:
        >>> logger = TensorBoardLogger()  # then: trainer callbacks=[logger]; tensorboard --logdir runs/train
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer: Any = None

    def on_train_start(self, trainer: Any) -> None:
        if not _is_main(trainer):
            return
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.log_dir or Path(trainer.save_dir)
        start = int(getattr(trainer, "start_epoch", 0) or 0)
        # A resumed run re-does epochs after ``start``: TensorBoard drops the old events from that step on.
        self.writer = SummaryWriter(str(log_dir), purge_step=start + 1 if start else None)
        doc = {s: trainer.cfg.to_dict()[s] for s in LOGGED_SECTIONS}
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(doc, sort_keys=False) + "```", start)
        spec = getattr(trainer, "spec", None)
        if spec is not None:
            kind = " (binary)" if spec.binary else ""
            self.writer.add_text("classes", f"{spec.num_classes} classes{kind}: " + ", ".join(spec.names), start)
        self.writer.flush()

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for tag, value in _numbers(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a live `tensorboard` sees each epoch as it ends

    def on_plots(self, trainer: Any, epoch: int, paths: dict[str, Path]) -> None:
        if self.writer is None:
            return
        for name, path in paths.items():
            if Path(path).suffix.lower() == ".png" and Path(path).is_file():
                self.writer.add_image(name, _read_png(Path(path)), int(epoch), dataformats="HWC")
        self.writer.flush()

    def on_train_end(self, trainer: Any, result: Any) -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        best = {f"best/{k}": float(v) for k, v in (getattr(result, "best_metrics", None) or {}).items()}
        hp = {k: _hparam_value(v) for k, v in flatten_config(trainer.cfg).items()}
        # Into this writer's own file (SummaryWriter.add_hparams would open a second run folder).
        for summary in hparams(hp, best):
            self.writer.file_writer.add_summary(summary)
        step = int(getattr(result, "epochs", 0) or 0) or None
        for tag, value in best.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.close()
        self.writer = None


def _hparam_value(v: Any) -> int | float | str | bool:
    """TensorBoard hparams take numbers, strings and bools only."""
    if isinstance(v, bool | int | float | str):
        return v
    return "none" if v is None else json.dumps(v)


# -------------------------------------------------------------------------------------------------- MLflow
def default_tracking_uri(cfg: Config) -> str:
    """The local store used without ``$MLFLOW_TRACKING_URI``: ``sqlite:///<project's parent>/mlflow.db``.

    Example:
        >>> from mobileseg.config import load_config
        >>> default_tracking_uri(load_config(overrides=["project=/data/runs"]))
        'sqlite:////data/mlflow.db'
    """
    return "sqlite:///" + (Path(cfg.runtime.project).expanduser().resolve().parent / "mlflow.db").as_posix()


def _metric_key(name: str) -> str:
    """MLflow accepts letters, digits, ``_ - . : /`` and spaces in names (so ``val/iou`` stays); others become _."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _param_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text[:6000]  # mlflow's limit on a param value


class MlflowLogger(Callback):
    """Params, per-epoch metrics, plots and the run folder into an MLflow run.

    Args:
        tracking_uri: default ``$MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`.
        experiment: default ``$MLFLOW_EXPERIMENT_NAME``, else ``'mobileseg'``.

    Attributes:
        run_id: the MLflow run's id once training started (also written to ``<run folder>/mlflow_run_id.txt``).

    Example:
        >>> logger = MlflowLogger(tracking_uri="http://127.0.0.1:5000")  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id: str | None = None

    def on_train_start(self, trainer: Any) -> None:
        if not _is_main(trainer):
            return
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        cfg, save_dir = trainer.cfg, Path(trainer.save_dir)
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg)
        local_default = uri == default_tracking_uri(cfg)
        name = self.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            if local_default:
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                # Local store: artifacts beside mlflow.db, not in whatever folder the process happens to run in.
                where = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" if local_default else None
                experiment_id = client.create_experiment(name, artifact_location=where and where.as_uri())
            from mobileseg._version import __version__

            run = client.create_run(
                experiment_id,
                run_name=save_dir.name,
                tags={"mobileseg.version": __version__, "mobileseg.save_dir": str(save_dir.resolve())},
            )
        except MlflowException as e:
            first = str(e).split("\n")[0][:300]
            raise ConfigError(f"mlflow=true: cannot use the MLflow store {uri} ({first})") from None
        finally:
            quiet.setLevel(level)
        self.client, self.run_id = client, run.info.run_id
        params = {k: _param_value(v) for k, v in flatten_config(cfg).items()}
        spec = getattr(trainer, "spec", None)
        if spec is not None:
            params.update(
                {"dataset.names": _param_value(list(spec.names)), "dataset.num_classes": str(spec.num_classes)}
            )
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # mlflow's limit per batch
            client.log_batch(self.run_id, params=items[i : i + 100])
        (save_dir / "mlflow_run_id.txt").write_text(self.run_id + "\n")

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(_metric_key(k), v, now, step) for k, v in _numbers(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_plots(self, trainer: Any, epoch: int, paths: dict[str, Path]) -> None:
        if self.run_id is None:
            return
        for path in paths.values():  # the latest of each plot, viewable while training runs
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path), "plots")

    def on_train_end(self, trainer: Any, result: Any) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        best = getattr(result, "best_metrics", None) or {}
        now = int(time.time() * 1000)
        step = int(getattr(result, "best_epoch", 0) or 0)
        finite = {k: float(v) for k, v in best.items() if not math.isnan(float(v))}
        if finite:
            metrics = [Metric(_metric_key(f"best/{k}"), v, now, step) for k, v in finite.items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        self.client.log_artifacts(self.run_id, str(Path(getattr(result, "save_dir", trainer.save_dir))))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.run_id = None
