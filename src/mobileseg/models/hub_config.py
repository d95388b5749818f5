"""The ``config.json`` of a pretrained folder: its format, how it is made from a model, checked, and read.

:mod:`mobileseg.models.hub` writes and loads the folders; this module owns the file that says how to rebuild the
model and read its output (``format_version`` 1, see the layout in :mod:`mobileseg.models.hub`). One validator
serves both directions: what :func:`build_config` writes must pass :func:`validate_config`, the check every
loaded file goes through, so a folder this library saves is always one it can load back.

Example:
    >>> validate_config({"format": "other"}, "config.json")
    Traceback (most recent call last):
    ...
    mobileseg.errors.WeightsError: config.json: not a mobileseg config (format is 'other', expected 'mobileseg')
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .weights import WeightsError

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "mobileseg"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "model_args", "names", "imgsz", "ignore_index")


def default_names(out_channels: int) -> list[str]:
    return ["background", "foreground"] if out_channels == 1 else [f"class{i}" for i in range(out_channels)]


class SavableModel(Protocol):
    """What writing a pretrained folder reads of a model. :class:`~mobileseg.models.segmenter.Segmenter` is one;
    it calls this module (``save_pretrained``), so this module names the protocol, not the class."""

    num_classes: int  # 1 = binary
    names: list[str] | None
    imgsz: tuple[int, int]

    def checkpoint_args(self) -> dict[str, Any]:
        """The keyword arguments that rebuild the network."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


def build_config(model: SavableModel, info: Mapping[str, Any], metrics: Mapping[str, float] | None) -> dict[str, Any]:
    from mobileseg._version import __version__

    out_channels = int(model.num_classes)
    names = info.get("names", model.names) or default_names(out_channels)
    imgsz = info.get("imgsz", model.imgsz)
    if isinstance(imgsz, int):
        imgsz = (imgsz, imgsz)
    palette = info.get("palette")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mobileseg_version": __version__,
        "architecture": "Segmenter",
        "model_args": model.checkpoint_args(),
        "names": [str(n) for n in names],
        "imgsz": [int(v) for v in imgsz],
        "palette": None if palette is None else [[int(c) for c in rgb] for rgb in palette],
        "ignore_index": int(info.get("ignore_index", 255)),
        "binary": out_channels == 1,
        "out_channels": out_channels,
        "metrics": None if metrics is None else {str(k): float(v) for k, v in metrics.items()},
    }


def load_pretrained_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``config.json`` of a local pretrained folder, without loading any weights.

    Args:
        path: the folder (or its ``config.json``).

    Returns:
        A dict with ``names`` (list[str]), ``imgsz`` ((H, W)), ``palette`` (list of [r, g, b] or None),
        ``ignore_index`` (int), ``binary`` (bool), ``out_channels`` (int), ``model_args`` (dict),
        ``metrics`` (dict or None), ``mobileseg_version`` and ``format_version``.

    Raises:
        WeightsError: the file is missing, not JSON, or not a valid mobileseg config (the message names the file
            and the problem).

    Example:
        >>> load_pretrained_info("pets-binary")["names"]  # doctest: +SKIP
        ['background', 'pet']
    """
    p = Path(path).expanduser()
    cfg_path = p if p.name == CONFIG_NAME and p.is_file() else p / CONFIG_NAME
    if not cfg_path.is_file():
        what = "no such folder" if not p.exists() else f"no {CONFIG_NAME} in it"
        raise WeightsError(
            f"{p}: {what}; a mobileseg pretrained folder holds {CONFIG_NAME} + {WEIGHTS_NAME} (see save_pretrained)"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WeightsError(f"{cfg_path}: not a text file (corrupt?)") from None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cfg_path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    validate_config(config, str(cfg_path))
    return {
        "names": list(config["names"]),
        "imgsz": (int(config["imgsz"][0]), int(config["imgsz"][1])),
        "palette": config.get("palette"),
        "ignore_index": int(config["ignore_index"]),
        "binary": int(config["model_args"]["num_classes"]) == 1,
        "out_channels": int(config["model_args"]["num_classes"]),
        "model_args": dict(config["model_args"]),
        "metrics": config.get("metrics"),
        "mobileseg_version": config.get("mobileseg_version"),
        "format_version": int(config["format_version"]),
    }


def validate_config(config: Any, source: str) -> None:
    """Raise a one-line :class:`WeightsError` naming ``source`` unless ``config`` is a usable mobileseg config."""

    def bad(problem: str) -> WeightsError:
        return WeightsError(f"{source}: {problem}")

    if not isinstance(config, dict):
        raise bad(f"expected a JSON object, got a {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise bad(f"not a mobileseg config (format is {config.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise bad(f"missing keys {missing}")
    version = config["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise bad(
            f"format_version {version} is newer than this mobileseg reads ({FORMAT_VERSION}); upgrade mobileseg "
            f"(the folder was written by mobileseg {config.get('mobileseg_version', '?')})"
        )
    args = config["model_args"]
    if not isinstance(args, dict) or "num_classes" not in args:
        raise bad("model_args must be an object with at least num_classes")
    out = args["num_classes"]
    if not isinstance(out, int) or isinstance(out, bool) or out < 1:
        raise bad(f"model_args.num_classes must be a positive integer, got {out!r}")
    names = config["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad(f"names must be a list of strings, got {names!r}")
    if len(names) != out and not (out == 1 and len(names) == 2):
        raise bad(f"{len(names)} names for {out} output channel(s) (a binary model has 1 channel and 2 names)")
    imgsz = config["imgsz"]
    if (
        not isinstance(imgsz, list)
        or len(imgsz) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in imgsz)
    ):
        raise bad(f"imgsz must be [H, W] with positive integers, got {imgsz!r}")
    palette = config.get("palette")
    if palette is not None and (
        not isinstance(palette, list)
        or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    ):
        raise bad("palette must be null or a list of [r, g, b] integers in 0..255")
    ignore = config["ignore_index"]
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise bad(f"ignore_index must be an integer, got {ignore!r}")
    metrics = config.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values())
    ):
        raise bad("metrics must be null or an object of numbers")
