"""Static int8 quantization for ONNX Runtime, and what it costs and gains against the fp32 file.

The decoder's transposed convolutions are first rewritten as equivalent sub-pixel convolutions
(:class:`~mobileseg.deploy.rewrites.SubPixelConvTranspose2d`): ORT has no int8 ConvTranspose kernel, and they are
most of the compute. Calibration uses real training images (:mod:`mobileseg.deploy.samples`); the IoU change is
measured with the same evaluator as ``mobileseg test`` (:func:`mobileseg.engine.evaluator.evaluate_split`).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileseg.data import DatasetSpec
from mobileseg.engine.evaluator import evaluate_split
from mobileseg.engine.predictor import warn
from mobileseg.engine.runtime import cpu_has_any
from mobileseg.errors import ExportError
from mobileseg.models.model_file import INPUT_NAME, ModelInfo
from mobileseg.timing import Candidate, measure_interleaved

from .onnx import export_onnx, read_onnx_metadata, set_onnx_metadata
from .onnx_graph import fuse_pads_into_convs, shapes_from_quantized
from .parity import PROB_ATOL, as_batch, compare
from .rewrites import fold_batchnorm, subpixel_rewrite
from .runtimes import OnnxBackend, quiet
from .samples import ImageSet

IOU_LOSS_TARGET = 0.01  # the most IoU that int8 may cost before we warn
# Kept in float by default: the stem and the first inverted-residual block, at half resolution. Bisected on two
# CamVid checkpoints (AMX round): quantizing only these cost 0.006 and 0.011 test mIoU, the rest of the network
# nothing measurable; in float they cost no speed (141.8 vs 139.7 images/s on pets, batch 8, 2 threads).
FLOAT_LAYERS = ("encoder.features.0", "encoder.features.1")
SETTINGS_KEY = "int8_settings"  # metadata key: the graph-changing settings as JSON, compared by ``settings_differ``


def int8_products_saturate() -> bool:
    """True when ONNX Runtime's uint8 x int8 products can overflow on this CPU: x86 without VNNI.

    There ORT multiplies with ``VPMADDUBSW``, which adds pairs of products into int16 and saturates; VNNI
    (AVX512-VNNI, AVX-VNNI, AMX) accumulates in int32, and ARM's dot-product kernels do not saturate either.
    """
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return False
    if cpu_has_any("_is_vnni_supported", "_is_amx_tile_supported"):
        return False
    try:
        return "avx_vnni" not in Path("/proc/cpuinfo").read_text()  # AVX-VNNI (client CPUs), unseen by torch
    except OSError:
        return True


def resolve_reduce_range(value: bool | str) -> bool:
    """The ``int8_reduce_range`` key as a bool: ``auto`` = 7-bit weights only where 8-bit ones could saturate.

    8-bit weights are the more accurate choice wherever they are safe: on the pets checkpoints of the AMX round
    (VNNI CPU) int8 lost 0.0018 and 0.0006 test IoU with 8-bit weights against 0.0100 and 0.0082 with 7-bit ones.
    The choice follows the CPU that exports (and checks) the file; pass true for a file bound for an AVX2 server.
    """
    if isinstance(value, str):
        if value.lower() != "auto":
            raise ValueError(f"int8_reduce_range must be true, false or auto, not {value!r}")
        return int8_products_saturate()
    return bool(value)


@dataclass
class Int8Report:
    """What int8 quantization cost and gained.

    Attributes:
        path: the int8 model.
        calib_images: images used for calibration (and where they came from).
        agreement: share of mask pixels equal to the fp32 ONNX model's on the parity images.
        max_abs_diff: largest probability difference to the fp32 ONNX model on those images.
        fp32_images_s, int8_images_s, speedup: batch throughput of both models (images/s) and their ratio.
        split, iou_fp32, iou_int8, iou_change: IoU (binary) or mIoU of both models on a labelled split, if any.
    """

    path: Path
    calib_images: str
    agreement: float
    max_abs_diff: float
    fp32_images_s: float
    int8_images_s: float
    speedup: float
    split: str | None = None
    iou_fp32: float = math.nan
    iou_int8: float = math.nan
    iou_change: float = math.nan


class ImageCalibrationReader:
    """Feeds calibration images one at a time to ``quantize_static`` (the ``CalibrationDataReader`` protocol)."""

    def __init__(self, images: torch.Tensor, input_name: str = INPUT_NAME) -> None:
        self.images = as_batch(images).numpy()
        self.input_name = input_name
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.input_name: self.images[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0


def quantize_int8(
    model: nn.Module,
    out_path: str | Path,
    calib_images: torch.Tensor,
    info: ModelInfo,
    opset: int = 17,
    reduce_range: bool | str = "auto",
    float_layers: Sequence[str] | str = "auto",
) -> Path:
    """Static int8 ONNX model of ``model``: QDQ, per-channel int8 weights, uint8 activations, min/max calibration.

    ``reduce_range`` (the ``int8_reduce_range`` key; ``auto``: :func:`resolve_reduce_range`) quantizes the weights
    to 7 bits. ONNX Runtime multiplies uint8 activations by int8 weights with ``VPMADDUBSW`` on x86 CPUs without
    VNNI (AVX2, AVX-512F), which adds pairs of products into int16 and saturates; 7-bit weights cannot overflow it.
    Measured on an AVX2 EPYC: a small test model's int8 masks agreed with fp32 on 83.6 % of pixels with 8-bit
    weights (see the README for the pets figures). CPUs with VNNI and ARM do not saturate, so ``false`` keeps the
    8th bit for them.

    ``float_layers`` (the ``int8_float_layers`` key) are modules left unquantized; ``auto`` = the stem and the first
    inverted-residual block (:data:`FLOAT_LAYERS`, why there); empty quantizes every layer.

    Steps: BatchNorm folding and the sub-pixel rewrite of the transposed convolutions (so that they, too, run as
    int8 convolutions), export, ``quant_pre_process`` (ORT graph optimisation + shape inference; symbolic shape
    inference is skipped, it cannot resolve the dynamic height/width), Pad folding, a float check of that graph
    against the model, then ``quantize_static`` over ``calib_images`` with ``float_layers``' nodes excluded.

    Raises:
        ExportError: the rewritten graph does not match the model, or quantization failed.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class _Reader(ImageCalibrationReader, CalibrationDataReader):
        pass

    out_path = Path(out_path)
    reduce_range = resolve_reduce_range(reduce_range)
    float_layers = resolve_float_layers(float_layers)
    images = as_batch(calib_images)
    with tempfile.TemporaryDirectory(prefix="mobileseg-int8-") as tmp, quiet():
        fp32, prepared = Path(tmp) / "subpixel.onnx", Path(tmp) / "prepared.onnx"
        rewritten = subpixel_rewrite(fold_batchnorm(model))
        export_onnx(rewritten, fp32, info, opset)
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantizing the exported graph still works
            prepared = fp32
        fuse_pads_into_convs(prepared)
        max_abs, _ = compare(model.eval().cpu(), OnnxBackend(prepared), images[:2])
        if max_abs > PROB_ATOL:
            raise ExportError(f"the sub-pixel graph prepared for int8 differs from the model (max |dp| {max_abs:.2e})")
        excluded = float_nodes(prepared, float_layers, {name for name, _ in rewritten.named_modules()})
        try:
            quantize_static(
                str(prepared),
                str(out_path),
                _Reader(images),
                nodes_to_exclude=excluded,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                reduce_range=reduce_range,
            )
        except Exception as e:
            raise ExportError(f"int8 quantization failed: {str(e).splitlines()[0][:300]}") from e
        shapes_from_quantized(out_path)
    metadata = {
        **info.to_metadata(),
        "opset": str(opset),
        "quantization": f"int8 static QDQ (uint8 activations, per-channel "
        f"{'7-bit (reduce_range)' if reduce_range else '8-bit'} weights), calibrated on "
        f"{images.shape[0]} images; transposed convs as sub-pixel convs"
        + (f"; kept in float: {', '.join(float_layers)}" if float_layers else ""),
        SETTINGS_KEY: json.dumps({"reduce_range": reduce_range, "float_layers": list(float_layers)}),
    }
    set_onnx_metadata(out_path, metadata)
    return out_path


def node_module(node_name: str) -> str:
    """The module path of an ONNX node: ``/encoder/features.1/conv/conv.0/Conv`` -> ``encoder.features.1.conv.0``.

    The exporter names each scope by the child's name within the last named module, so a container's child
    (``conv.0`` under ``conv``) repeats its parent's name instead of adding a level.
    """
    path: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def float_nodes(onnx_path: Path, layers: Sequence[str], modules: Collection[str]) -> list[str]:
    """Names of the nodes of the modules ``layers`` (``encoder.features.1``) and their children, to keep in float.

    ``modules`` are the exported model's module names: the encoder runs the blocks whose expansion is a skip in
    parts, so their nodes carry no name of theirs (``/encoder/conv.0/...``) and cannot be chosen.

    Raises:
        ExportError: a layer that names no part of the model (the message lists the ones that do).
    """
    import onnx

    nodes = [(n.name, node_module(n.name)) for n in onnx.load(str(onnx_path)).graph.node]
    chosen: list[str] = []
    for layer in layers:
        hits = [n for n, m in nodes if m == layer or m.startswith(layer + ".")] if layer in modules else []
        if not hits:
            known = sorted({".".join(m.split(".")[:3]) for _, m in nodes if m and m in modules}, key=natural_key)
            why = "is run in parts (a skip taps it) and has no nodes of its own" if layer in modules else "is not"
            raise ExportError(
                f"int8_float_layers: {layer!r} {why} in the model's graph (choose from {', '.join(known)})"
            )
        chosen += hits
    return chosen


def natural_key(text: str) -> list[Any]:
    """Sort key that puts ``features.2`` before ``features.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def resolve_float_layers(value: Sequence[str] | str) -> tuple[str, ...]:
    """The ``int8_float_layers`` key as module names: ``auto`` = :data:`FLOAT_LAYERS`, empty = none."""
    layers = [value] if isinstance(value, str) else list(value)
    return FLOAT_LAYERS if [v.lower() for v in layers] == ["auto"] else tuple(v for v in layers if v)


def settings_differ(path: Path, reduce_range: bool | str, float_layers: Sequence[str] | str) -> str:
    """How the int8 file at ``path`` was quantized differently from these settings; empty if the same.

    Only the settings that change the graph (and so the speed) are compared; the calibration images change the
    ranges, not the kernels. A file from an older mobileseg has no record and is reported as such.
    """
    record = read_onnx_metadata(path).get(SETTINGS_KEY)
    if record is None:
        return "settings that are not recorded (an older export)"
    recorded = json.loads(record)
    differ = []
    if recorded["reduce_range"] != resolve_reduce_range(reduce_range):
        differ.append(f"int8_reduce_range={str(recorded['reduce_range']).lower()}")
    if tuple(recorded["float_layers"]) != resolve_float_layers(float_layers):
        differ.append(f"int8_float_layers={','.join(recorded['float_layers'])}")
    return " ".join(differ)


def int8_path_for(path: Path) -> Path:
    """``best.onnx`` -> ``best.int8.onnx``."""
    return path.with_name(f"{path.stem}.int8.onnx")


def export_int8(
    model: nn.Module,
    fp32: Path,
    info: ModelInfo,
    calib: ImageSet,
    parity_set: ImageSet,
    spec: DatasetSpec | None,
    *,
    opset: int = 17,
    batch: int = 8,
    conf: float = 0.5,
    threads: int | None = None,
    reduce_range: bool | str = "auto",
    float_layers: Sequence[str] | str = "auto",
    log: Callable[..., Any] = print,
) -> Int8Report:
    """Quantize with the calibration images, then measure agreement, speed and IoU against the fp32 ONNX model."""
    out = int8_path_for(fp32)
    start = time.perf_counter()
    auto = isinstance(reduce_range, str)
    reduce_range = resolve_reduce_range(reduce_range)
    float_layers = resolve_float_layers(float_layers)
    quantize_int8(model, out, calib.images, info, opset, reduce_range=reduce_range, float_layers=float_layers)
    bits = "7-bit weights" if reduce_range else "8-bit weights"
    if auto:
        bits += " (auto: " + ("this x86 CPU has no VNNI)" if reduce_range else "this CPU has VNNI or is ARM)")
    if float_layers:
        bits += f"; in float: {', '.join(float_layers)}"
    log(
        f"int8: {out} ({out.stat().st_size / 1e6:.1f} MB, {bits}) calibrated on {calib.origin} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    with quiet():
        ref, q = OnnxBackend(fp32, threads), OnnxBackend(out, threads)
        max_abs, differ = compare(ref, q, parity_set.images, conf)
        x = torch.rand(batch, info.in_channels, *info.imgsz, generator=torch.Generator().manual_seed(0))
        candidates = [
            Candidate("fp32", lambda: ref(x[:1]), lambda: ref(x)),
            Candidate("int8", lambda: q(x[:1]), lambda: q(x)),
        ]
        fp32_row, int8_row = measure_interleaved(candidates, batch, warmup=1, runs=2, batch_runs=5)
    speedup = int8_row.images_s / fp32_row.images_s if fp32_row.images_s else math.nan
    report = Int8Report(out, calib.origin, 1 - differ, max_abs, fp32_row.images_s, int8_row.images_s, speedup)
    log(
        f"int8 vs fp32 on {parity_set.origin}: {100 * report.agreement:.2f} % of mask pixels agree, "
        f"max |dp| {max_abs:.2e}"
    )
    log(
        f"int8 speed (batch {batch}, {threads} threads): fp32 {report.fp32_images_s:.1f} images/s, "
        f"int8 {report.int8_images_s:.1f} images/s ({report.speedup:.2f}x)"
    )
    split = next((s for s in ("test", "val") if spec and spec.splits.get(s)), None)
    if spec is None or split is None:
        log("int8 IoU change: no labelled test/val split reachable, not measured")
        return report
    with quiet():
        m32 = evaluate_split(ref, spec, split, info.imgsz, batch=batch, conf=conf).metrics
        m8 = evaluate_split(q, spec, split, info.imgsz, batch=batch, conf=conf).metrics
    report.split, report.iou_fp32, report.iou_int8 = split, m32["iou"], m8["iou"]
    report.iou_change = m8["iou"] - m32["iou"]
    kind = "IoU" if info.binary else "mIoU"
    log(
        f"int8 {split} {kind} ({len(spec.splits[split])} images): fp32 {m32['iou']:.4f}, int8 {m8['iou']:.4f} "
        f"({report.iou_change:+.4f}; target >= -{IOU_LOSS_TARGET})"
    )
    if report.iou_change < -IOU_LOSS_TARGET:
        warn(
            f"int8 loses {-report.iou_change:.4f} {kind} on the {split} split (target <= {IOU_LOSS_TARGET}); "
            f"try keeping more early layers in float (int8_float_layers=), more calib_images, or the fp32 model"
        )
    return report


__all__ = [
    "FLOAT_LAYERS",
    "IOU_LOSS_TARGET",
    "Int8Report",
    "export_int8",
    "int8_path_for",
    "quantize_int8",
    "resolve_float_layers",
]
