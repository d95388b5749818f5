"""What each command reads, and the ``--help`` text of its keys.

The schema (:mod:`mobileseg.config`) is one for all commands; this module says which keys each command actually
reads (``COMMAND_KEYS``), what a key means for one command where the schema's description (written for ``train``)
would mislead, and formats the aligned ``key=default  meaning`` table that ``mobileseg <command> --help`` prints.
:func:`unread_keys` lets a command warn about a key it would silently ignore (``serve lr=0.1``).

Example:
    >>> command_keys("check-data")[:4]
    ['data.dataset', 'data.preset', 'data.imgsz', 'data.channels']
"""

from __future__ import annotations

import textwrap

from pydantic import BaseModel

from mobileseg.config import SECTIONS, Config, resolve_key
from mobileseg.config_schema import format_value
from mobileseg.errors import ConfigError

# Which keys each command reads (a section name = all its keys), from the code paths: train (engine/trainer.py),
# val/test (engine/evaluator.py), predict (engine/predictor.py), export (exporter.py), benchmark
# (benchmarking.py), check-data (mobileseg.check_data), serve (server.py). ``--help`` shows only these.
_RUN_FOLDER = ("runtime.project", "runtime.name", "runtime.exist_ok")
_DATA_LOCATION = ("data.dataset", "data.preset")
# How an image is predicted (engine/inference_mode.py).
_INFERENCE = ("predict.infer", "predict.window", "predict.overlap", "predict.blend", "predict.tta",
              "predict.tta_scales", "data.train_scale")  # fmt: skip
COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("model", "data", "train", "runtime.device", "runtime.seed", "runtime.threads", *_RUN_FOLDER,
              "runtime.verbose", "runtime.tensorboard", "runtime.mlflow", "predict.infer", "predict.window",
              "predict.overlap", "predict.blend", "predict.tta_scales"),
    "val": ("runtime.weights", "runtime.split", *_DATA_LOCATION, "data.split_ratios", "data.split_seed",
            "data.cache", "data.workers", "train.batch", "predict.conf", "runtime.device", "runtime.threads",
            *_RUN_FOLDER, "runtime.verbose", *_INFERENCE, "train.amp", "predict.compile"),
    "test": ("runtime.weights", *_DATA_LOCATION, "data.split_ratios", "data.split_seed", "data.cache",
             "data.workers", "train.batch", "predict.conf", "runtime.device", "runtime.threads", *_RUN_FOLDER,
             "runtime.verbose", *_INFERENCE, "train.amp", "predict.compile"),
    "predict": ("runtime.weights", "predict.source", "predict.out", "predict.save_probs",
                "predict.conf", "train.batch", "runtime.device", "runtime.threads", *_RUN_FOLDER,
                "runtime.verbose", *_INFERENCE, "train.amp", "predict.compile"),
    "export": ("runtime.weights", "export", "predict.out", "predict.source", *_DATA_LOCATION, "train.batch",
               "predict.conf", "runtime.threads", "runtime.seed", "runtime.verbose"),
    "benchmark": ("runtime.weights", "train.batch", "runtime.threads", "runtime.device", "export.opset",
                  "export.calib_images", "export.int8_reduce_range", "export.int8_float_layers",
                  *_DATA_LOCATION, "predict.source", *_RUN_FOLDER, "runtime.verbose",
                  "train.amp", "predict.compile"),
    "check-data": (*_DATA_LOCATION, "data.imgsz", "data.channels", "data.mask_resize", "data.split_ratios",
                   "data.split_seed"),
    "convert": ("convert", "predict.out", "runtime.verbose"),
    "serve": ("runtime.weights", "serve", "predict.conf", "runtime.device", "runtime.threads",
              "runtime.verbose", *_INFERENCE, "train.amp", "predict.compile"),
}  # fmt: skip

# What a key means for one command, where the schema's description (written for train) would mislead.
_COMMAND_DESCRIPTIONS: dict[tuple[str, str], str] = {
    **{
        (c, "data.dataset"): "dataset YAML, folder or preset; empty = the one the model was trained on"
        for c in ("val", "test", "export", "benchmark")
    },
    **{(c, "data.preset"): "preset of the folder given in data=" for c in ("val", "test", "export", "benchmark")},
    **{
        (c, "runtime.weights"): "model to evaluate: checkpoint (.pt), or an export (needs data=)"
        for c in ("val", "test")
    },
    **{
        (c, f"data.{key}"): f"{what} of the automatic split, for a model that records no split (else its own is kept)"
        for c in ("val", "test")
        for key, what in (("split_ratios", "train/val/test ratios"), ("split_seed", "seed"))
    },
    ("predict", "runtime.weights"): "model: checkpoint (.pt), ONNX or TorchScript export",
    ("train", "predict.tta_scales"): "scales of tta=ms for this model, recorded in it (test, predict and serve use "
    "them unless given); empty = 0.75,1,1.25",
    ("predict", "predict.source"): "image file, folder, glob or list file; an unreadable image is skipped and "
    "named, and the run then ends with exit status 1",
    ("serve", "runtime.weights"): "model to serve: checkpoint (.pt), ONNX or TorchScript export",
    ("export", "runtime.weights"): "checkpoint (.pt) to export",
    ("benchmark", "runtime.weights"): "checkpoint (.pt), or an ONNX model (ONNX Runtime rows only)",
    ("export", "predict.out"): "output file; empty = beside the weights",
    ("convert", "predict.out"): "folder the dataset is written to (images/, masks/, data.yaml); required",
    ("export", "predict.source"): "images for the parity check/int8 calibration when the dataset is not here",
    ("benchmark", "predict.source"): "images calibrating the temporary int8 model when the dataset is not here",
    ("benchmark", "runtime.device"): "ignored: the benchmark measures the CPU",
    **{(c, "train.batch"): "images per batch" for c in ("val", "test", "export")},
    ("predict", "train.batch"): "images per forward pass (resize mode; decoded a batch ahead), windows in slide mode",
    **{
        (c, "train.amp"): "bf16/fp16 autocast of a .pt model where it pays (CPUs with bf16 units, CUDA); false = "
        "fp32; exports run as exported"
        for c in ("val", "test", "predict", "serve")
    },
    ("benchmark", "train.amp"): "time the PyTorch bf16 row (CPUs with bf16 units); false = skip it",
    ("benchmark", "train.batch"): "batch size of the throughput measurement",
    **{(c, "predict.conf"): "foreground threshold (binary) of the metrics" for c in ("val", "test")},
    ("export", "predict.conf"): "foreground threshold (binary) of the parity check",
    **{(c, "data.cache"): "cache of decoded samples (see train)" for c in ("val", "test")},
    **{
        (c, "data.train_scale"): "image scale of slide inference; empty = the model's (its training scale)"
        for c in ("val", "test", "predict", "serve")
    },
}


def command_keys(command: str) -> list[str]:
    """The dotted keys ``command`` reads, in schema order (sections as in ``SECTIONS``).

    Example:
        >>> command_keys("check-data")[:4]
        ['data.dataset', 'data.preset', 'data.imgsz', 'data.channels']
    """
    if command not in COMMAND_KEYS:
        raise ConfigError(f"unknown command '{command}'; commands: {', '.join(COMMAND_KEYS)}")
    wanted: set[str] = set()
    for item in COMMAND_KEYS[command]:
        fields = _section_model(item.partition(".")[0]).model_fields
        wanted.update([item] if "." in item else (f"{item}.{n}" for n in fields))
    return [f"{sec}.{n}" for sec in SECTIONS for n in _section_model(sec).model_fields if f"{sec}.{n}" in wanted]


def _section_model(section: str) -> type[BaseModel]:
    return Config.model_fields[section].annotation  # type: ignore[return-value]


def unread_keys(command: str, keys: list[str]) -> list[str]:
    """The keys (short or dotted, as typed) that ``command`` does not read, to warn about: ``serve lr=0.1``
    would otherwise be accepted and do nothing.

    Example:
        >>> unread_keys("serve", ["port", "lr", "train.epochs"])
        ['lr', 'train.epochs']
    """
    read = set(command_keys(command))
    return [k for k in keys if resolve_key(k) not in read]


def key_help(command: str | None = None, width: int = 118) -> str:
    """The keys ``command`` reads (every key when None), grouped by section: ``key=default`` and its meaning in
    aligned columns, long meanings wrapped.

    Example:
        >>> print(key_help("convert"))  # doctest: +NORMALIZE_WHITESPACE
          [runtime]
            verbose=true          print progress and results
          [predict]
            out=                  folder the dataset is written to (images/, masks/, data.yaml); required
          [convert]
            labels=               a COCO JSON file, or a folder (or file) of LabelMe JSON
            label_format=auto     auto = coco for a .json file with 'annotations', labelme otherwise
            images=               the COCO images folder (LabelMe JSON name their own images)
            class_names=          class order (background first); empty = background + the labels in order of appearance
            unknown_labels=error  what a label missing from class_names becomes
    """
    keys = command_keys(command) if command else [f"{s}.{n}" for s in SECTIONS for n in _section_model(s).model_fields]
    defaults = Config()
    rows: list[tuple[str, str, str]] = []  # section, key=default, description
    for dotted in keys:
        section, _, name = dotted.partition(".")
        field = _section_model(section).model_fields[name]
        shown = "data" if dotted == "data.dataset" else name
        desc = _COMMAND_DESCRIPTIONS.get((command or "", dotted)) or field.description or ""
        rows.append((section, f"{shown}={format_value(getattr(getattr(defaults, section), name))}", desc))
    column = min(max(len(r[1]) for r in rows) + 2, 34)
    lines: list[str] = []
    current = ""
    for section, left, desc in rows:
        if section != current:
            lines.append(f"  [{section}]")
            current = section
        pad = f"    {left}".ljust(4 + column) if len(left) < column else f"    {left}\n" + " " * (4 + column)
        wrapped = textwrap.wrap(desc, max(40, width - 4 - column)) or [""]
        lines.append(pad + wrapped[0])
        lines.extend(" " * (4 + column) + more for more in wrapped[1:])
    return "\n".join(line.rstrip() for line in lines)
