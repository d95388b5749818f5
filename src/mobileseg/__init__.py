"""mobileseg: MobileNetV2 + pix2pix semantic segmentation, from a folder of images and masks to a shippable model.

The public API mirrors the command line (``mobileseg <command> key=value``): every function takes a
:class:`~mobileseg.config.Config`, a YAML path or dict, and/or ``key=value`` keyword overrides. The functions
live in :mod:`mobileseg.commands`; they are loaded on first use, so ``import mobileseg`` and ``mobileseg --help``
stay fast.

Example:
    >>> import mobileseg
    >>> result = mobileseg.train(epochs=1)  # doctest: +SKIP
    >>> metrics = mobileseg.test(weights=result.best)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mobileseg._version import __version__

if TYPE_CHECKING:
    from mobileseg.commands import benchmark, check_data, convert, export, predict, serve, test, train, val  # noqa: F401
    from mobileseg.deploy.runtimes import load_predictor  # noqa: F401
    from mobileseg.models import Segmenter  # noqa: F401

__all__ = [
    "Segmenter",
    "__version__",
    "benchmark",
    "check_data",
    "convert",
    "export",
    "load_predictor",
    "predict",
    "serve",
    "test",
    "train",
    "val",
]

_LAZY = {
    "Segmenter": "mobileseg.models",
    "load_predictor": "mobileseg.deploy.runtimes",
    **{
        name: "mobileseg.commands"
        for name in ("benchmark", "check_data", "convert", "export", "predict", "serve", "train", "val")
    },
}


def __getattr__(name: str) -> Any:
    # Lazy: torch loads when a command or the model is first used.
    if name == "test":  # a plain attribute named 'test' would be collected by pytest; keep it lazy too
        from mobileseg.commands import test

        return test
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mobileseg' has no attribute {name!r}")
