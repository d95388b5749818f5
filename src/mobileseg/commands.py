"""The commands of ``mobileseg <command>``, each a thin composition of the library's layers.

``mobileseg.train(...)``, ``mobileseg.test(...)``... (the package's API) call these. Each one resolves the
config, opens what it needs (a dataset, a model file of any format through :mod:`mobileseg.deploy.runtimes`) and
hands over to the module that does the work, so the command line, the Python API and the tests run the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobileseg.config import Config, resolve_config
from mobileseg.data import DataReport, check_dataset, resolve_dataset
from mobileseg.data.spec import SPLITS
from mobileseg.deploy.export import ExportResult
from mobileseg.deploy.export import export as _export
from mobileseg.deploy.runtimes import load_predictor, open_model
from mobileseg.engine.evaluator import evaluate_model
from mobileseg.engine.predict_run import PredictRun, predict_files
from mobileseg.engine.runtime import increment_path, prepare
from mobileseg.engine.trainer import TrainResult
from mobileseg.engine.trainer import train as _train
from mobileseg.errors import ConfigError

ConfigLike = Config | dict[str, Any] | str | None


def train(cfg: ConfigLike = None, callbacks: Any = (), **overrides: Any) -> TrainResult:
    """Train a model (``mobileseg train``); see :class:`mobileseg.engine.trainer.Trainer`."""
    return _train(cfg, callbacks, **overrides)


def val(cfg: ConfigLike = None, split: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate ``weights`` (a checkpoint or an exported file) on a split (default ``val``).

    Writes ``runs/<split>/<name>/`` (``runs/val/<name>/`` for ``split="train"``: ``runs/train`` holds training
    runs) and returns the metrics with ``save_dir``. The dataset is the model's own
    (see :func:`mobileseg.models.model_file.trained_data`); exported files need ``data=``. A checkpoint runs
    under bf16/fp16 autocast where it pays unless ``amp=false`` (recorded as ``precision`` in metrics.json).
    """
    cfg = resolve_config(cfg, overrides)
    split = split or cfg.runtime.split
    if split not in SPLITS:  # the config checks split=; the argument comes here directly
        raise ConfigError(f"split must be 'train', 'val' or 'test' (got {split!r})")
    weights = _weights(cfg)
    d, device, threads = prepare(cfg.runtime)
    backend, info, ckpt = open_model(weights, device, threads, cfg.train.amp, cfg.predict.compile)
    return evaluate_model(cfg, backend, info, ckpt, split, d, device)


def test(cfg: ConfigLike = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate ``weights`` on the held-out test split (``mobileseg test``); another ``split`` is an error."""
    for key in ("split", "runtime.split"):  # taken out: val() gets the split as its own argument
        check_test_split(overrides.pop(key, None))
    return val(cfg, "test", **overrides)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def check_test_split(split: str | None) -> None:
    """``test`` always evaluates the test split: a ``split`` it would ignore is refused, naming ``val``."""
    if split in (None, "", "test"):
        return
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train', 'val' or 'test' (got {split!r}); 'mobileseg test' evaluates test")
    raise ConfigError(
        f"'mobileseg test' evaluates the test split; for the {split} split run 'mobileseg val split={split}'"
    )


def check_data(cfg: ConfigLike = None, **overrides: Any) -> DataReport:
    """Check a dataset (``mobileseg check-data``): counts, sizes, mask values and every problem with its file."""
    cfg = resolve_config(cfg, overrides)
    d = cfg.data
    spec = resolve_dataset(
        d.dataset, d.preset, d.split_ratios, d.split_seed, channels=d.channels, mask_resize=d.mask_resize
    )
    return check_dataset(spec, imgsz=d.imgsz)


def predict(cfg: ConfigLike = None, **overrides: Any) -> PredictRun:
    """Segment new images at their original size (``mobileseg predict``).

    ``weights`` is a checkpoint or an exported model, ``source`` an image, folder, glob or ``.txt`` list of paths;
    results go to ``out`` (default ``runs/predict/expN``): see :func:`mobileseg.engine.predict_run.predict_files`.

    Example:
        >>> run = mobileseg.predict(weights="best.pt", source="photos/")  # doctest: +SKIP
        >>> run.save_dir, [r.shares for r in run]  # doctest: +SKIP
    """
    cfg = resolve_config(cfg, overrides)
    rt, pc = cfg.runtime, cfg.predict
    weights = _weights(cfg)
    if not pc.source:
        raise ConfigError("no images given: pass source=<image, folder, glob or .txt list of paths>")
    _, device, threads = prepare(rt)
    predictor = load_predictor(weights, device=device, conf=pc.conf, tta=pc.tta, threads=threads, config=cfg)
    save_dir = Path(pc.out) if pc.out else increment_path(Path(rt.project) / "predict", rt.name, rt.exist_ok)
    return predict_files(predictor, pc.source, save_dir, cfg.train.batch, pc.save_probs, rt.verbose)


def export(cfg: ConfigLike = None, **overrides: Any) -> ExportResult:
    """Export a checkpoint with a parity check (``mobileseg export``); see :mod:`mobileseg.deploy.export`."""
    return _export(cfg, **overrides)


def benchmark(cfg: ConfigLike = None, **overrides: Any) -> Any:
    """Measure inference speed (``mobileseg benchmark``); see :mod:`mobileseg.benchmarking`."""
    from mobileseg.benchmarking import benchmark as _benchmark

    return _benchmark(cfg, **overrides)


def serve(cfg: ConfigLike = None, **overrides: Any) -> None:
    """Serve a model over HTTP with a web page (``mobileseg serve``); see :mod:`mobileseg.server`."""
    from mobileseg.server import serve as _serve  # the 'serve' extra: imported only when serving

    _serve(cfg, **overrides)


def convert(cfg: ConfigLike = None, **overrides: Any) -> Path:
    """Convert COCO or LabelMe polygon labels to ``images/`` + ``masks/`` + ``data.yaml`` (``mobileseg convert``).

    Returns the dataset YAML to train on (``mobileseg train data=<it>``); see :mod:`mobileseg.data.convert`.
    """
    from mobileseg.data.convert import convert_coco, convert_labelme

    cfg = resolve_config(cfg, overrides)
    c, out = cfg.convert, cfg.predict.out
    if not c.labels or not out:
        raise ConfigError("convert needs labels=<coco.json or labelme folder> and out=<folder for the dataset>")
    labels = Path(c.labels)
    kind = c.label_format
    if kind == "auto":
        kind = (
            "coco"
            if labels.is_file() and labels.suffix == ".json" and b'"annotations"' in labels.read_bytes()
            else "labelme"
        )
    if kind == "coco":
        if not c.images:
            raise ConfigError("a COCO file names its images by file name: pass images=<folder holding them>")
        yaml_path = convert_coco(labels, c.images, out, c.class_names, unknown=c.unknown_labels)
    else:
        yaml_path = convert_labelme(labels, out, c.class_names, unknown=c.unknown_labels)
    if cfg.runtime.verbose:
        print(f"Dataset saved to {yaml_path}\nTrain on it:  mobileseg train data={yaml_path}")
    return yaml_path


def _weights(cfg: Config) -> Path:
    if not cfg.runtime.weights:
        raise ConfigError("no model given: pass weights=<best.pt, model.onnx or model.torchscript>")
    return Path(cfg.runtime.weights)


__all__ = ["benchmark", "check_data", "convert", "export", "predict", "serve", "test", "train", "val"]
