"""A trained model as its consumers see it: metadata (:class:`ModelInfo`), one loader, and its dataset.

Every command that uses a trained model (val/test, predict, export, benchmark, serve) goes through here, so they
agree on three things:

* what a model is beyond its weights (:class:`ModelInfo`: class names, input size, palette, ...), stored in
  checkpoints and embedded in every exported file;
* how a checkpoint becomes a model (:func:`load_model`, one safe load, one rebuild);
* which images it was trained and held out on (:func:`trained_data`): the run's own dataset and split, the
  recorded split stems when the checkpoint has them; ``data=`` only relocates the dataset. So ``test`` and
  ``export`` score the very same test images.

Example:
    >>> from mobileseg.models import Segmenter
    >>> ckpt = Segmenter(num_classes=1).to_checkpoint(names=["background", "pet"], imgsz=(224, 224))
    >>> model, info, _ = load_model(ckpt)
    >>> info.names, info.binary, info.imgsz
    (['background', 'pet'], True, (224, 224))
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mobileseg._version import __version__
from mobileseg.config import Config, ConfigError, DataConfig, load_config
from mobileseg.data import DatasetSpec, load_dataset
from mobileseg.errors import WeightsError
from mobileseg.palette import default_palette

from .checkpoint import load_checkpoint
from .hub import check_model_path, is_pretrained_dir, load_pretrained
from .segmenter import Segmenter

PREPROCESSING = "RGB (or in_channels bands) float [0,1], NCHW, normalisation inside the model"
INPUT_NAME, OUTPUT_NAME = "images", "logits"


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about a model beyond its weights.

    Stored in checkpoints (as separate keys), in ONNX files (``metadata_props``) and in TorchScript archives
    (an extra file), so any exported model can be used without the checkpoint it came from.

    Args:
        names: class names including the background (2 names for a binary model).
        imgsz: the input size (H, W) the model was trained at.
        binary: one output channel with a sigmoid (else C channels with a softmax).
        out_channels: the model's output channels (1 for binary).
        palette: one RGB colour per class, for masks and overlays.
        ignore_index: the label value that marks unlabelled pixels in the training masks.
        dynamic_hw: whether the exported graph accepts other (multiple-of-32) input sizes.
        in_channels: input bands (3 = RGB); other counts read images with their own bands and bit depth
            (:mod:`mobileseg.data.bands`), in training, prediction and exports alike.
        inference: how the model is meant to predict (``infer``, ``window``, ``overlap``, ``blend``,
            ``train_scale``, ``tta_scales``; see :mod:`mobileseg.engine.inference_mode`); None = resize to ``imgsz``.
    """

    names: list[str]
    imgsz: tuple[int, int]
    binary: bool
    out_channels: int
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    dynamic_hw: bool = True
    in_channels: int = 3
    inference: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        """Classes of the mask (2 for a binary model: background and foreground)."""
        return 2 if self.binary else self.out_channels

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], model: torch.nn.Module | None = None) -> ModelInfo:
        """Metadata of a checkpoint dict; the model fills gaps (older or hand-made checkpoints)."""
        out_channels = int(getattr(model, "num_classes", 0) or _out_channels_from_state(ckpt))
        binary = bool(getattr(model, "binary", out_channels == 1))
        imgsz = ckpt.get("imgsz") or getattr(model, "imgsz", None) or (224, 224)
        names = ckpt.get("names") or getattr(model, "names", None)
        info = cls.build(names, imgsz, binary, out_channels, ckpt.get("palette"), ckpt.get("ignore_index", 255))
        args = ckpt.get("model_args") or {}
        info = dataclasses.replace(info, in_channels=int(getattr(model, "in_channels", args.get("in_channels", 3))))
        return dataclasses.replace(info, inference=ckpt.get("inference"))

    @classmethod
    def build(
        cls,
        names: Sequence[str] | None,
        imgsz: Sequence[int],
        binary: bool,
        out_channels: int,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int | None = 255,
        dynamic_hw: bool = True,
        inference: dict[str, Any] | None = None,
        in_channels: int = 3,
    ) -> ModelInfo:
        """Fill defaults: generic class names and the default palette when none were stored."""
        num_classes = 2 if binary else out_channels
        if not names or len(names) != num_classes:
            names = ["background", "foreground"] if binary else [f"class_{i}" for i in range(num_classes)]
        if not palette or len(palette) < num_classes:
            palette = default_palette(num_classes, names)
        return cls(
            names=[str(n) for n in names],
            imgsz=(int(imgsz[0]), int(imgsz[1])),
            binary=bool(binary),
            out_channels=int(out_channels),
            palette=[(int(c[0]), int(c[1]), int(c[2])) for c in palette],
            ignore_index=255 if ignore_index is None else int(ignore_index),
            dynamic_hw=bool(dynamic_hw),
            in_channels=int(in_channels),
            inference=dict(inference) if inference else None,
        )

    def to_metadata(self) -> dict[str, str]:
        """String key/values for ONNX ``metadata_props`` (JSON where the value is structured)."""
        return {
            "mobileseg_version": __version__,
            "names": json.dumps(self.names),
            "imgsz": json.dumps(list(self.imgsz)),
            "preprocessing": PREPROCESSING,
            "output": "logits (N, C, H, W): sigmoid when binary (C=1), softmax otherwise",
            "binary": json.dumps(self.binary),
            "out_channels": str(self.out_channels),
            "num_classes": str(self.num_classes),
            "palette": json.dumps([list(c) for c in self.palette]),
            "ignore_index": str(self.ignore_index),
            "dynamic_hw": json.dumps(self.dynamic_hw),
            "in_channels": str(self.in_channels),
            "inference": json.dumps(self.inference),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelInfo:
        """Inverse of :meth:`to_metadata`; raises :class:`WeightsError` naming the file when keys are missing."""
        missing = [k for k in ("names", "imgsz", "binary", "out_channels") if k not in meta]
        if missing:
            raise WeightsError(
                f"{source} has no mobileseg metadata ({', '.join(missing)} missing); "
                f"export it with 'mobileseg export weights=<best.pt>'"
            )
        return cls.build(
            json.loads(meta["names"]),
            json.loads(meta["imgsz"]),
            json.loads(meta["binary"]),
            int(meta["out_channels"]),
            json.loads(meta["palette"]) if meta.get("palette") else None,
            int(meta.get("ignore_index", 255)),
            json.loads(meta.get("dynamic_hw", "true")),
            json.loads(meta.get("inference", "null")),
            in_channels=int(meta.get("in_channels", 3)),
        )


def _out_channels_from_state(ckpt: dict[str, Any]) -> int:
    """Output channels from the last bias of the state dict (the decoder head), for checkpoints without args."""
    state = ckpt.get("model") or {}
    for key in reversed(list(state)):
        if key.endswith("bias") and state[key].ndim == 1:
            return int(state[key].shape[0])
    return 1


def load_model(
    path: str | os.PathLike[str] | Mapping[str, Any], map_location: Any = "cpu", source: str | None = None
) -> tuple[Segmenter, ModelInfo, dict[str, Any]]:
    """``(model in eval mode, its ModelInfo, the checkpoint dict)`` from a checkpoint file, a folder written by
    ``save_pretrained`` (config.json + model.safetensors), or an already loaded checkpoint dict.

    Raises:
        MissingFileError: no such file, or a folder that is not a pretrained one (see :func:`check_model_path`).
        WeightsError: the file is unreadable, not a mobileseg checkpoint, or inconsistent.
    """
    where = source or (None if isinstance(path, Mapping) else str(path))
    # A Hub-style folder (save_pretrained) is read through safetensors; anything else must be a file.
    if not isinstance(path, Mapping) and is_pretrained_dir(check_model_path(path)):
        path = load_pretrained(path)
    ckpt = load_checkpoint(path, where)
    model = Segmenter.from_checkpoint(ckpt, map_location=map_location, source=where or "checkpoint")
    return model, ModelInfo.from_checkpoint(ckpt, model), ckpt


@dataclass
class TrainedData:
    """The dataset a checkpoint was trained on: its data config (at model size) and the recorded split stems."""

    config: DataConfig
    stems: dict[str, list[str]] | None = None


def trained_data(ckpt: Mapping[str, Any], cfg: Config, imgsz: Sequence[int]) -> TrainedData | None:
    """The one rule for "the dataset this model was trained on", used by val/test/export/benchmark alike.

    The checkpoint's recorded data config (dataset, preset, split ratios and seed) and split stems; ``data=``
    (and ``preset=``) given now replace only the location, so a dataset moved to another machine keeps the
    training run's split and the "test" images stay the ones the model never saw. Returns None when neither the
    checkpoint nor ``cfg`` names a dataset.
    """
    recorded = (ckpt.get("config") or {}).get("data")
    data: DataConfig | None = None
    if recorded:
        try:
            data = load_config({"data": recorded}).data
        except ConfigError:  # written by another version with keys this one does not know
            data = None
    if cfg.data.dataset is not None:
        moved = {"dataset": cfg.data.dataset, "preset": cfg.data.preset or (data.preset if data else None)}
        data = data.model_copy(update=moved) if data else cfg.data
    if data is None:
        return None
    data = data.model_copy(update={"imgsz": (int(imgsz[0]), int(imgsz[1])), "cache": cfg.data.cache})
    stems = ckpt.get("split_stems")
    return TrainedData(data, {k: list(v) for k, v in stems.items()} if isinstance(stems, Mapping) else None)


def load_trained_dataset(trained: TrainedData, check: bool = True) -> DatasetSpec:
    """Resolve (and check) the dataset of :func:`trained_data`, with its recorded split when there is one."""
    return load_dataset(trained.config, check=check, stems=trained.stems)


__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ModelInfo",
    "TrainedData",
    "load_model",
    "load_trained_dataset",
    "trained_data",
]
