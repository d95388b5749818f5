"""``mobileseg export``: a checkpoint to ONNX (optionally int8) or TorchScript, with proof that it computes the same.

``mobileseg export weights=best.pt`` writes ``best.onnx`` next to the weights (or to ``out=``):

* BatchNorm is folded into the decoder's transposed convolutions first (the ONNX exporter only folds it into
  plain convolutions), which saves one pass over every decoder activation at inference.
* Parity: the exported file and the PyTorch model run on real images (the model's own test/val split, else
  ``source=``, else noise with a warning); probabilities must agree to 1e-4 and masks on more than 99.9 % of
  pixels, or :class:`~mobileseg.errors.ExportError` is raised (and the bad file removed) with the figures.
* ``int8=true``: static int8 ONNX calibrated on ``calib_images`` training images, written as ``best.int8.onnx``,
  with its agreement, speed-up and IoU change on the test split reported (:mod:`mobileseg.deploy.int8`).

Example:
    >>> result = export(weights="runs/train/exp/weights/best.pt", int8=True)  # doctest: +SKIP
    >>> result.path, result.parity.ok, result.int8.iou_change  # doctest: +SKIP
    (PosixPath('runs/train/exp/weights/best.onnx'), True, -0.0031)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobileseg.config import Config, resolve_config
from mobileseg.data import DatasetSpec
from mobileseg.engine.evaluator import evaluate_split
from mobileseg.engine.predictor import warn
from mobileseg.engine.runtime import setup_threads
from mobileseg.errors import ConfigError, ExportError
from mobileseg.models import Segmenter
from mobileseg.models.model_file import ModelInfo, load_model

from .int8 import Int8Report, export_int8, resolve_float_layers
from .onnx import export_onnx
from .parity import ParityReport, check_parity
from .rewrites import fold_batchnorm
from .runtimes import EXPORTED_SUFFIXES, TORCHSCRIPT_SUFFIXES, open_phone_model, quiet
from .samples import ImageSet, noise_images, open_dataset, source_images, split_images
from .torchscript import export_torchscript

EXPORT_SUFFIX = {
    "onnx": ".onnx",
    "torchscript": ".torchscript",
    "executorch": ".pte",
    "tflite": ".tflite",
    "safetensors": "",
}
INT8_FORMATS = ("onnx", "executorch", "tflite")
PHONE_FORMATS = ("executorch", "tflite")


@dataclass
class ExportResult:
    """Files written by ``export`` and the evidence that they work.

    Attributes:
        path: the exported model.
        format: ``onnx`` or ``torchscript``.
        parity: the check of ``path`` against the PyTorch model.
        info: the metadata embedded.
        parity_images: where the parity images came from.
        int8: the int8 model's report (``int8=true``), else None.
    """

    path: Path
    format: str
    parity: ParityReport
    info: ModelInfo
    parity_images: str = ""
    int8: Int8Report | None = None

    @property
    def int8_path(self) -> Path | None:
        return self.int8.path if self.int8 else None


def default_output(weights: Path, fmt: str, out: str | None) -> Path:
    """``best.pt`` -> ``best.onnx`` beside it (``best/`` for a safetensors folder); ``out=`` may name a file (with
    the suffix) or a folder."""
    suffix = EXPORT_SUFFIX[fmt]
    if fmt == "safetensors":
        return Path(out) if out else weights.with_suffix("")
    if out:
        target = Path(out)
        if target.suffix.lower() in (suffix, *TORCHSCRIPT_SUFFIXES) and suffix and not target.is_dir():
            return target
        return target / f"{weights.stem}{suffix}"
    return weights.with_suffix(suffix)


def export_phone(
    cfg: Config,
    model: Segmenter,
    info: ModelInfo,
    path: Path,
    spec: DatasetSpec | None,
    calib: ImageSet | None,
    parity_set: ImageSet,
    threads: int,
    log: Any,
) -> ExportResult:
    """ExecuTorch ``.pte`` or LiteRT ``.tflite``, parity-checked in its own runtime (the export raises and removes
    the file when the check fails). With ``int8=true`` the fp32 file is written too, and both are scored on the
    test split with the evaluator ``mobileseg test`` uses, so the README's IoU change is this command's output."""
    from .phone_runtimes import require

    ec = cfg.export
    require("executorch.exir" if ec.format == "executorch" else "litert_torch", f"format={ec.format}")
    if ec.format == "executorch":
        from .executorch import export_executorch as write
        from .executorch import float_filter

        if calib is not None:  # a misspelt int8_float_layers fails now, not after the fp32 file is written
            float_filter(model, resolve_float_layers(ec.int8_float_layers))
    else:
        from .litert import export_tflite as write
    kw = {"outputs": ec.outputs, "conf": cfg.predict.conf, "check_images": parity_set.images, "threads": threads}
    start = time.perf_counter()
    write(model, path, info, log=log, **kw)
    log(f"export: {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    result = ExportResult(
        path, ec.format, ParityReport(0.0, 0.0, True, len(parity_set.images)), info, parity_set.origin
    )
    if calib is None:
        return result
    int8 = path.with_name(f"{path.stem}.int8{path.suffix}")
    start = time.perf_counter()
    write(model, int8, info, int8=True, calib_images=calib.images, float_layers=ec.int8_float_layers, log=log, **kw)
    log(
        f"int8: {int8} ({int8.stat().st_size / 1e6:.1f} MB) calibrated on {calib.origin} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    report = Int8Report(int8, calib.origin, math.nan, math.nan, math.nan, math.nan, math.nan)
    split = next((s for s in ("test", "val") if spec and spec.splits.get(s)), None)
    if spec is not None and split is not None and ec.outputs != "mask":
        with quiet():
            m32 = evaluate_split(
                open_phone_model(path, threads), spec, split, info.imgsz, conf=cfg.predict.conf
            ).metrics
            m8 = evaluate_split(open_phone_model(int8, threads), spec, split, info.imgsz, conf=cfg.predict.conf).metrics
        report.split, report.iou_fp32, report.iou_int8 = split, m32["iou"], m8["iou"]
        report.iou_change = m8["iou"] - m32["iou"]
        log(
            f"int8 {split} {'IoU' if info.binary else 'mIoU'} ({len(spec.splits[split])} images): fp32 "
            f"{m32['iou']:.4f}, int8 {m8['iou']:.4f} ({report.iou_change:+.4f})"
        )
    result.int8 = report
    return result


def export_pretrained(
    model: Segmenter, info: ModelInfo, ckpt: dict[str, Any], weights: Path, folder: Path, log: Any
) -> ExportResult:
    """``format=safetensors``: the Hub-style folder of :meth:`Segmenter.save_pretrained`, checked by reloading it
    (the outputs must be bit-identical: the same weights, read without pickle)."""
    metrics = {k.removeprefix("val/"): float(v) for k, v in (ckpt.get("metrics") or {}).items()}
    run = weights.resolve().parent.parent  # runs/train/<name>/weights/best.pt -> the run's pictures
    images = [p for p in (run / "val_predictions.png", run / "results.png") if p.is_file()]
    meta = {"names": info.names, "imgsz": list(info.imgsz), "palette": info.palette, "ignore_index": info.ignore_index}
    model.save_pretrained(folder, info=meta, metrics=metrics, images=images)
    x = torch.rand(2, info.in_channels, *info.imgsz, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        same = bool(torch.equal(model(x), Segmenter.from_pretrained(folder)(x)))
    parity = ParityReport(0.0 if same else float("inf"), 0.0 if same else 1.0, same, 2, 0.0, 0.0)
    if not same:
        raise ExportError(f"{folder}: the saved folder does not reload to the same model")
    log(f"export: {weights} -> {folder}/ (config.json, model.safetensors, README.md); reloads bit-identical")
    return ExportResult(folder, "safetensors", parity, info, "2 random images (bit-identical reload)")


def check_images(
    cfg: Config, spec: DatasetSpec | None, why_not: str, info: ModelInfo
) -> tuple[ImageSet, ImageSet | None]:
    """``(parity images, calibration images or None)``: the model's own test/val images (train for calibration),
    else ``source=``, else noise (parity only, with a warning). Found before any work, so a missing dataset fails
    an int8 export in a second rather than after the fp32 export.
    """
    n = max(2, cfg.train.batch)
    c = info.in_channels
    parity_set = split_images(spec, ("test", "val"), info.imgsz, n) or source_images(
        cfg.predict.source, info.imgsz, n, c
    )
    if parity_set is None:
        warn(
            f"no real images for the parity check ({why_not or 'no test/val split'}; no source=): "
            f"checking on random noise, which exercises the graph but not the model's typical inputs"
        )
        parity_set = noise_images(info.imgsz, n, cfg.runtime.seed, c)
    if not cfg.export.int8:
        return parity_set, None
    k = cfg.export.calib_images
    calib = split_images(spec, "train", info.imgsz, k) or source_images(cfg.predict.source, info.imgsz, k, c)
    if calib is None:
        raise ExportError(
            f"int8 needs calibration images: {why_not or 'the dataset has no train split'}; "
            f"pass data=<dataset> or source=<folder of typical images>"
        )
    return parity_set, calib


def export(cfg: Config | dict[str, Any] | str | None = None, **overrides: Any) -> ExportResult:
    """Export ``weights`` (a checkpoint) to ``format`` with a parity check, and optionally to int8 ONNX.

    Raises:
        ExportError: the export failed or its parity check failed (the figures are in the message).
        ConfigError: no weights, an exported file given as weights, or int8 asked for with TorchScript.
    """
    cfg = resolve_config(cfg, overrides)
    ec, rt = cfg.export, cfg.runtime
    if not rt.weights:
        raise ConfigError("no model given: pass weights=<path to best.pt>")
    weights = Path(rt.weights)
    if weights.suffix.lower() in EXPORTED_SUFFIXES:
        raise ConfigError(f"{weights} is already an exported model; export needs the checkpoint (.pt)")
    if ec.int8 and ec.format not in INT8_FORMATS:
        raise ConfigError(f"int8=true needs format=onnx, executorch or tflite (not {ec.format})")
    if ec.outputs != "logits" and ec.format not in PHONE_FORMATS:
        raise ConfigError(f"outputs={ec.outputs} is for format=executorch or tflite; {ec.format} exports logits")
    log = print if rt.verbose else (lambda *a, **k: None)
    threads = setup_threads(rt.threads)
    model, info, ckpt = load_model(weights)
    path = default_output(weights, ec.format, cfg.predict.out)
    if ec.format == "safetensors":
        return export_pretrained(model, info, ckpt, weights, path, log)
    spec, why_not = open_dataset(ckpt, cfg, info.imgsz)
    parity_set, calib = check_images(cfg, spec, why_not, info)
    if ec.format in PHONE_FORMATS:
        return export_phone(cfg, model, info, path, spec, calib, parity_set, threads, log)
    start = time.perf_counter()
    folded = fold_batchnorm(model)
    if ec.format == "onnx":
        path, info = export_onnx(folded, path, info, ec.opset)
        shape = "dynamic batch/height/width" if info.dynamic_hw else f"dynamic batch, fixed {info.imgsz}"
        what = f"ONNX opset {ec.opset}, {shape}"
    else:
        export_torchscript(folded, path, info)
        what = f"TorchScript, traced at {info.imgsz[0]}x{info.imgsz[1]}"
    size_mb = path.stat().st_size / 1e6
    log(f"export: {weights} -> {path} ({what}, {size_mb:.1f} MB) in {time.perf_counter() - start:.1f} s")

    with quiet():
        parity = check_parity(model, path, parity_set.images, cfg.predict.conf, threads=threads)
    log(f"parity vs PyTorch on {parity_set.origin}: {parity}")
    if not parity.ok:
        path.unlink(missing_ok=True)  # never leave a file that computes something else where tools look for it
        raise ExportError(
            f"the exported model does not match the PyTorch model: {parity}. The file was removed. "
            f"Try another opset (opset=...) or format."
        )
    result = ExportResult(path, ec.format, parity, info, parity_set.origin)
    if calib is not None:
        result.int8 = export_int8(
            model,
            path,
            info,
            calib,
            parity_set,
            spec,
            opset=ec.opset,
            batch=cfg.train.batch,
            conf=cfg.predict.conf,
            threads=threads,
            reduce_range=ec.int8_reduce_range,
            float_layers=ec.int8_float_layers,
            log=log,
        )
    log(f"Export saved to {path}" + (f" and {result.int8.path}" if result.int8 else ""))
    return result


__all__ = ["ExportResult", "default_output", "export"]
