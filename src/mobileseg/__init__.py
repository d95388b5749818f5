"""mobileseg: MobileNetV2 + pix2pix semantic segmentation, from a folder of images and masks to a shippable model.

The public API mirrors the command line (``mobileseg <command> key=value``): every function takes a
:class:`~mobileseg.config.Config`, a YAML path or dict, and/or ``key=value`` keyword overrides.

Example:
    >>> import mobileseg
    >>> result = mobileseg.train(epochs=1)  # doctest: +SKIP
    >>> metrics = mobileseg.test(weights=result.best)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mobileseg.models import Segmenter  # noqa: F401

__all__ = ["Segmenter", "benchmark", "check_data", "export", "predict", "serve", "test", "train", "val"]


def __getattr__(name: str) -> Any:
    # Lazy: `mobileseg --help` and `import mobileseg` stay fast; torch loads when a model is needed.
    if name == "Segmenter":
        from mobileseg.models import Segmenter

        return Segmenter
    raise AttributeError(f"module 'mobileseg' has no attribute {name!r}")


def train(cfg: Any = None, **overrides: Any) -> Any:
    """Train a model (``mobileseg train``); returns a :class:`~mobileseg.engine.trainer.TrainResult`."""
    from mobileseg.engine.trainer import train as _train

    return _train(cfg, **overrides)


def val(cfg: Any = None, split: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate ``weights`` on a split (default ``val``) and write ``runs/<split>/<name>/``."""
    from mobileseg.engine.evaluator import evaluate_checkpoint

    return evaluate_checkpoint(cfg, split, **overrides)


def test(cfg: Any = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate ``weights`` on the held-out test split (``mobileseg test``)."""
    return val(cfg, "test", **overrides)


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def check_data(cfg: Any = None, **overrides: Any) -> Any:
    """Check a dataset (``mobileseg check-data``); returns a :class:`~mobileseg.data.DataReport`."""
    from mobileseg.config import resolve_config
    from mobileseg.data import check_dataset, resolve_dataset

    cfg = resolve_config(cfg, overrides)
    d = cfg.data
    return check_dataset(resolve_dataset(d.dataset, d.preset, d.split_ratios, d.split_seed))


def predict(cfg: Any = None, **overrides: Any) -> Any:
    """Segment new images at their original size (``mobileseg predict``)."""
    from mobileseg.engine.predictor import predict as _predict

    return _predict(cfg, **overrides)


def export(cfg: Any = None, **overrides: Any) -> Any:
    """Export a checkpoint to ONNX or TorchScript with a parity check (``mobileseg export``)."""
    from mobileseg.exporter import export as _export

    return _export(cfg, **overrides)


def benchmark(cfg: Any = None, **overrides: Any) -> Any:
    """Measure inference speed (``mobileseg benchmark``)."""
    from mobileseg.benchmarking import benchmark as _benchmark

    return _benchmark(cfg, **overrides)


def serve(cfg: Any = None, **overrides: Any) -> Any:
    """Serve a model over HTTP with a web page (``mobileseg serve``)."""
    from mobileseg.server import serve as _serve

    return _serve(cfg, **overrides)
