"""Export a checkpoint to ONNX (optionally int8) or TorchScript, and prove the export computes the same thing.

``mobileseg export weights=best.pt`` writes ``best.onnx`` next to the weights (or to ``out=``):

* ONNX via the TorchScript-based exporter (``dynamo=False``: offline, simple dynamic axes), dynamic batch and,
  where the graph allows, dynamic height/width (checked by running ORT at another size). Metadata for any
  consumer sits in ``metadata_props``: class names, input size, preprocessing, binary flag, palette,
  ignore_index, mobileseg version (:class:`~mobileseg.engine.predictor.ModelInfo`).
* BatchNorm is folded into the decoder's transposed convolutions before export (the exporter only folds it into
  plain convolutions), which saves one pass over every decoder activation at inference.
* Parity: ONNX Runtime and the PyTorch model run on real images (the checkpoint's test/val split, else
  ``source=``, else noise with a warning); probabilities must agree to 1e-4 and masks on more than 99.9 % of
  pixels, or :class:`ExportError` is raised (and the bad file removed) with the figures.
* ``int8=true``: static QDQ per-channel quantization for ONNX Runtime, calibrated on ``calib_images`` training
  images, written as ``best.int8.onnx``, with its agreement, speed-up and IoU change on the test split reported.
  The decoder's transposed convolutions are first rewritten as equivalent sub-pixel convolutions
  (:class:`SubPixelConvTranspose2d`): ORT has no int8 ConvTranspose kernel, and they are most of the compute.
* ``format=torchscript``: ``torch.jit.trace`` with the metadata as an extra file, same parity check.

Example:
    >>> result = mobileseg.export(weights="runs/train/exp/weights/best.pt", int8=True)  # doctest: +SKIP
    >>> result.path, result.parity.ok, result.int8.iou_change  # doctest: +SKIP
    (PosixPath('runs/train/exp/weights/best.onnx'), True, -0.0031)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobileseg.config import Config, ConfigError, DataConfig, load_config, resolve_config
from mobileseg.engine.metrics import ConfusionMatrix, logits_to_pred
from mobileseg.engine.predictor import (
    INPUT_NAME,
    METADATA_FILE,
    OUTPUT_NAME,
    TORCHSCRIPT_SUFFIXES,
    Backend,
    ModelInfo,
    OnnxBackend,
    TorchBackend,
    resolve_source,
    to_rgb,
    warn,
)
from mobileseg.engine.runtime import setup_threads

PROB_ATOL = 1e-4  # max |p_export - p_torch|: float32 reordering gives ~1e-6; a wrong op gives >> 1e-3
MASK_DIFF_MAX = 1e-3  # share of mask pixels allowed to differ (pixels sitting exactly on the threshold)
IOU_LOSS_TARGET = 0.01  # the most IoU that int8 may cost before we warn
EXPORT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}


class ExportError(RuntimeError):
    """The export failed or does not compute what the PyTorch model computes; the message has the figures."""


# ---------------------------------------------------------------------------------------------------- parity
@dataclass
class ParityReport:
    """How closely an exported model follows the PyTorch model on the same images.

    Attributes:
        max_abs_diff: largest absolute difference of probabilities (sigmoid / softmax of the logits).
        mask_diff_fraction: share of mask pixels (after threshold / argmax) that differ.
        ok: both figures within tolerance.
        images: number of images compared.
        atol, max_mask_diff: the tolerances applied.
    """

    max_abs_diff: float
    mask_diff_fraction: float
    ok: bool
    images: int = 0
    atol: float = PROB_ATOL
    max_mask_diff: float = MASK_DIFF_MAX

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"max |dp| {self.max_abs_diff:.2e} (limit {self.atol:.0e}), mask pixels different "
            f"{100 * self.mask_diff_fraction:.3f} % (limit {100 * self.max_mask_diff:.1f} %) on {self.images} "
            f"images: {verdict}"
        )


def open_exported(path: str | Path, threads: int | None = None) -> Backend:
    """A backend for an exported file: ONNX Runtime for ``.onnx``, PyTorch for TorchScript."""
    path = Path(path)
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the way to load
            return TorchBackend(torch.jit.load(str(path), map_location="cpu"))
    return OnnxBackend(path, threads)


def _as_batch(images: torch.Tensor | Sequence[torch.Tensor] | np.ndarray) -> torch.Tensor:
    """Images as float (N, 3, H, W) in [0, 1], from float or uint8 tensors/arrays or a list of (3, H, W)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        images = torch.stack([torch.as_tensor(im) for im in images])
    if images.ndim == 3:
        images = images[None]
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)


def compare(
    reference: Backend | nn.Module,
    candidate: Backend | nn.Module,
    images: torch.Tensor | Sequence[torch.Tensor],
    conf: float = 0.5,
    chunk: int = 4,
) -> tuple[float, float]:
    """``(max |probability difference|, share of differing mask pixels)`` of two models on the same images."""
    batch = _as_batch(images)
    max_abs, differ, total = 0.0, 0, 0
    for start in range(0, batch.shape[0], chunk):
        x = batch[start : start + chunk]
        with torch.inference_mode():
            a, b = reference(x).float().cpu(), candidate(x).float().cpu()
        if a.shape != b.shape:
            raise ExportError(f"output shapes differ: {tuple(a.shape)} (reference) vs {tuple(b.shape)} (export)")
        max_abs = max(max_abs, (_probs(a) - _probs(b)).abs().max().item())
        differ += (logits_to_pred(a, conf) != logits_to_pred(b, conf)).sum().item()
        total += a.shape[0] * a.shape[2] * a.shape[3]
    return max_abs, differ / max(1, total)


def check_parity(
    torch_model: nn.Module,
    onnx_path: str | Path,
    images: torch.Tensor | Sequence[torch.Tensor],
    conf: float = 0.5,
    atol: float = PROB_ATOL,
    max_mask_diff: float = MASK_DIFF_MAX,
    threads: int | None = None,
) -> ParityReport:
    """Run the PyTorch model and an exported file (ONNX, or TorchScript by suffix) on ``images`` and compare.

    Args:
        torch_model: the reference model (put in eval mode, run on the CPU).
        onnx_path: the exported file.
        images: float (N, 3, H, W) in [0, 1] at a size the model accepts (uint8 is scaled), or a list of (3, H, W).
        conf: foreground threshold of a binary model's mask.
        atol: largest allowed probability difference.
        max_mask_diff: largest allowed share of differing mask pixels (exclusive).

    Example:
        >>> report = check_parity(model, "best.onnx", torch.rand(4, 3, 224, 224))  # doctest: +SKIP
        >>> report.ok, report.max_abs_diff  # doctest: +SKIP
        (True, 3.5e-07)
    """
    model = torch_model.eval().cpu()
    exported = open_exported(onnx_path, threads)
    max_abs, fraction = compare(model, exported, images, conf)
    ok = bool(max_abs <= atol and fraction < max_mask_diff)
    return ParityReport(max_abs, fraction, ok, _as_batch(images).shape[0], atol, max_mask_diff)


# ---------------------------------------------------------------------------------------------- model prep
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with each ``ConvTranspose2d -> BatchNorm2d`` pair of a Sequential fused.

    Why: torch.onnx folds BatchNorm into ``Conv`` but not into ``ConvTranspose``, so the decoder's four
    upsample blocks would each run a separate BatchNorm over their full-resolution output.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval().cpu()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.ConvTranspose2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module[i] = fuse_conv_bn_eval(conv, bn, transpose=True)
                module[i + 1] = nn.Identity()
    return folded


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter/quantizer chatter (tracer and deprecation warnings, ORT notices); errors still raise."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(previous)


# ---------------------------------------------------------------------------------------------------- ONNX
def set_onnx_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the ONNX file's ``metadata_props`` (replacing keys that exist)."""
    import onnx

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))
    proto.doc_string = "mobileseg segmentation model: input 'images' RGB float [0,1] NCHW, output 'logits'"
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (without loading the weights into a session)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def export_onnx(
    model: nn.Module, path: str | Path, info: ModelInfo, opset: int = 17, dynamic_hw: bool = True
) -> tuple[Path, ModelInfo]:
    """Export ``model`` (already folded, eval, CPU) to ONNX with dynamic batch (and H/W), plus metadata.

    Dynamic H/W is verified by running ONNX Runtime at a second size; if that fails the file is re-exported with
    a fixed input size and ``dynamic_hw`` is false in the metadata.

    Returns:
        The path and the metadata actually embedded.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = info.imgsz
    dummy = torch.rand(1, 3, h, w)
    axes: dict[int, str] = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    try:
        with quiet():
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,  # the TorchScript-based exporter: offline, and dynamic axes are one dict
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path))
    except Exception as e:  # the exporter raises many types; the user needs one readable line
        raise ExportError(f"ONNX export (opset {opset}) failed: {str(e).splitlines()[0][:300]}") from e
    if dynamic_hw:
        try:
            with quiet():
                OnnxBackend(path)(torch.rand(1, 3, h + 32, w + 32))
        except Exception as e:
            warn(
                f"the ONNX graph does not run at another input size ({str(e).splitlines()[0][:120]}); "
                f"re-exporting with a fixed {h}x{w} input"
            )
            return export_onnx(model, path, info, opset, dynamic_hw=False)
    info = dataclasses.replace(info, dynamic_hw=dynamic_hw)
    set_onnx_metadata(path, {**info.to_metadata(), "opset": str(opset)})
    return path, info


def export_torchscript(model: nn.Module, path: str | Path, info: ModelInfo) -> Path:
    """Trace ``model`` at its input size and save it with the metadata as the ``mobileseg.json`` extra file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = info.imgsz
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model, torch.rand(1, 3, h, w), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(info.to_metadata())})
    except Exception as e:
        raise ExportError(f"TorchScript export failed: {str(e).splitlines()[0][:300]}") from e
    return path


# ---------------------------------------------------------------------------------------------------- int8
class ImageCalibrationReader:
    """Feeds calibration images one at a time to ``quantize_static`` (the ``CalibrationDataReader`` protocol)."""

    def __init__(self, images: torch.Tensor, input_name: str = INPUT_NAME) -> None:
        self.images = _as_batch(images).numpy()
        self.input_name = input_name
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.input_name: self.images[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0


class SubPixelConvTranspose2d(nn.Module):
    """A stride-s ``ConvTranspose2d`` rewritten as one ``Conv2d`` (s*s phases) followed by a pixel shuffle.

    Why: ONNX Runtime's CPU provider has no int8 ``ConvTranspose`` kernel, and the pix2pix decoder's transposed
    convolutions are most of the model's compute, so a quantized model would still run them in float. Output
    pixel ``(s*m + a, s*n + b)`` of a transposed convolution only sees the kernel taps of phase ``(a, b)``; one
    ordinary convolution over the (zero-padded) input with ``s*s*C_out`` filters computes all phases at once, and
    reshapes/transposes (int8-friendly data movement) interleave them. Mathematically identical; in float it is
    slower than ORT's ConvTranspose (more multiply-adds on zero taps), so only the int8 model uses it.

    Only for ``groups=1``, ``dilation=1``, equal strides, and an output exactly ``s`` times the input (the
    decoder's Keras-'same' layers); see :func:`subpixel_rewrite`.
    """

    def __init__(self, ct: nn.ConvTranspose2d) -> None:
        super().__init__()
        s = ct.stride[0]
        weight = ct.weight.detach()  # (C_in, C_out, kh, kw)
        c_in, c_out = weight.shape[:2]
        taps: list[list[list[tuple[int, int]]]] = []  # per dim, per phase: (kernel tap, input offset)
        lo, hi = [], []
        for dim in range(2):
            k, p = ct.kernel_size[dim], ct.padding[dim]
            phases = [[(t, (a + p - t) // s) for t in range(k) if (a + p - t) % s == 0] for a in range(s)]
            offsets = [d for phase in phases for _, d in phase]
            taps.append(phases)
            lo.append(min(offsets))
            hi.append(max(offsets))
        kh, kw = hi[0] - lo[0] + 1, hi[1] - lo[1] + 1
        w = torch.zeros(s, s, c_out, c_in, kh, kw, dtype=weight.dtype)  # phase-major channels
        for a in range(s):
            for b in range(s):
                for th, dh in taps[0][a]:
                    for tw, dw in taps[1][b]:
                        w[a, b, :, :, dh - lo[0], dw - lo[1]] = weight[:, :, th, tw].t()
        self.stride, self.out_channels = s, c_out
        self.activation: nn.Module = nn.Identity()  # see subpixel_rewrite
        self.pad = (-lo[1], hi[1], -lo[0], hi[0])  # F.pad order: left, right, top, bottom
        self.conv = nn.Conv2d(c_in, s * s * c_out, (kh, kw), bias=ct.bias is not None)
        self.conv.weight.data.copy_(w.reshape(s * s * c_out, c_in, kh, kw))
        if ct.bias is not None:
            self.conv.bias.data.copy_(ct.bias.detach().repeat(s * s))

    @staticmethod
    def supports(ct: nn.ConvTranspose2d) -> bool:
        s = ct.stride[0]
        same = all(k + op - 2 * p == s for k, op, p in zip(ct.kernel_size, ct.output_padding, ct.padding, strict=True))
        return ct.groups == 1 and ct.dilation == (1, 1) and ct.stride[0] == ct.stride[1] and s > 1 and same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shuffle is written channels-last: ORT runs int8 convolutions in NHWC, so the NCHW<->NHWC
        # transposes it inserts around each conv cancel against these permutes, the shuffle itself moves whole
        # C-element rows, and the sizes are read from an NHWC tensor (no transpose or dequantize just for a
        # Shape). Written NCHW, the same graph spent more time in Transpose than in the convolutions.
        y = self.activation(self.conv(nn.functional.pad(x, self.pad))).permute(0, 2, 3, 1)  # (n, h, w, a*b*c)
        n, h, w, _ = y.shape
        s, c = self.stride, self.out_channels
        y = y.reshape(n, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5)  # (n, h, a, w, b, c)
        return y.reshape(n, h * s, w * s, c).permute(0, 3, 1, 2)


def subpixel_rewrite(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every supported ``ConvTranspose2d`` replaced by :class:`SubPixelConvTranspose2d`.

    A ReLU that follows the transposed conv in the same Sequential (past Identity/Dropout, e.g. a folded
    BatchNorm) moves into the sub-pixel module, before the shuffle: an elementwise op commutes with moving data,
    and there ONNX Runtime fuses it into the int8 convolution instead of re-quantizing after the shuffle.
    """
    rewritten = copy.deepcopy(model).eval().cpu()
    for module in list(rewritten.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and SubPixelConvTranspose2d.supports(child):
                sub = SubPixelConvTranspose2d(child)
                setattr(module, name, sub)
                if isinstance(module, nn.Sequential):
                    names = list(module._modules)
                    for later in names[names.index(name) + 1 :]:
                        layer = module._modules[later]
                        if isinstance(layer, nn.ReLU):
                            sub.activation = nn.ReLU()
                            module._modules[later] = nn.Identity()
                            break
                        if not isinstance(layer, nn.Identity | nn.Dropout):
                            break
    return rewritten


def fuse_pads_into_convs(path: str | Path) -> int:
    """Fold each zero ``Pad`` (constant pads on H/W only) that feeds a single ``Conv`` into the Conv's ``pads``.

    Why: torch's ``Conv2d`` has no asymmetric padding, so the sub-pixel rewrite pads explicitly; left alone, the
    Pad is a full copy of the activation in front of every quantized convolution. Run after constant folding
    (``quant_pre_process``), when the pads are initializers. Returns the number of Pads removed.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = 0
    for node in list(graph.node):
        users = consumers.get(node.output[0], []) if node.op_type == "Pad" else []
        if len(users) != 1 or users[0].op_type != "Conv" or node.input[1] not in values:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        fill = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        pads = [int(v) for v in values[node.input[1]]]  # [n0, c0, h0, w0, n1, c1, h1, w1]
        if (
            mode != b"constant"
            or fill is None
            or np.any(fill != 0)
            or len(pads) != 8
            or any(pads[i] for i in (0, 1, 4, 5))
        ):
            continue
        conv = users[0]
        old = next((a for a in conv.attribute if a.name == "pads"), None)
        base = list(old.ints) if old is not None else [0, 0, 0, 0]
        if old is not None:
            conv.attribute.remove(old)
        conv.attribute.append(
            helper.make_attribute("pads", [base[0] + pads[2], base[1] + pads[3], base[2] + pads[6], base[3] + pads[7]])
        )
        conv.input[0] = node.input[0]
        graph.node.remove(node)
        removed += 1
    onnx.save(proto, str(path))
    return removed


def shapes_from_quantized(path: str | Path) -> int:
    """Point each ``Shape`` that reads a ``DequantizeLinear`` output at the quantized tensor instead.

    Why: the sub-pixel shuffle reads its sizes with ``Shape``; after quantization that Shape hangs off a
    DequantizeLinear that exists only for it, and ONNX Runtime then dequantizes a whole activation to learn four
    numbers. The quantized tensor has the same shape, so the rewire is exact. Returns the number rewired.
    """
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    dequant = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    rewired = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in dequant:
            node.input[0] = dequant[node.input[0]].input[0]
            rewired += 1
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for node in list(dequant.values()):
        if node.output[0] not in used:
            graph.node.remove(node)
    onnx.save(proto, str(path))
    return rewired


def quantize_int8(
    model: nn.Module, out_path: str | Path, calib_images: torch.Tensor, info: ModelInfo, opset: int = 17
) -> Path:
    """Static int8 ONNX model of ``model``: QDQ, per-channel int8 weights, uint8 activations, min/max calibration.

    Steps: BatchNorm folding and the sub-pixel rewrite of the transposed convolutions (so that they, too, run as
    int8 convolutions), export, ``quant_pre_process`` (ORT graph optimisation + shape inference; symbolic shape
    inference is skipped, it cannot resolve the dynamic height/width), Pad folding, a float check of that graph
    against the model, then ``quantize_static`` over ``calib_images``.

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
    images = _as_batch(calib_images)
    with tempfile.TemporaryDirectory(prefix="mobileseg-int8-") as tmp, quiet():
        fp32, prepared = Path(tmp) / "subpixel.onnx", Path(tmp) / "prepared.onnx"
        export_onnx(subpixel_rewrite(fold_batchnorm(model)), fp32, info, opset)
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantizing the exported graph still works
            prepared = fp32
        fuse_pads_into_convs(prepared)
        max_abs, _ = compare(model.eval().cpu(), OnnxBackend(prepared), images[:2])
        if max_abs > PROB_ATOL:
            raise ExportError(f"the sub-pixel graph prepared for int8 differs from the model (max |dp| {max_abs:.2e})")
        try:
            quantize_static(
                str(prepared),
                str(out_path),
                _Reader(images),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as e:
            raise ExportError(f"int8 quantization failed: {str(e).splitlines()[0][:300]}") from e
        shapes_from_quantized(out_path)
    metadata = {
        **info.to_metadata(),
        "opset": str(opset),
        "quantization": f"int8 static QDQ (uint8 activations, per-channel int8 weights), calibrated on "
        f"{images.shape[0]} images; transposed convs as sub-pixel convs",
    }
    set_onnx_metadata(out_path, metadata)
    return out_path


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


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class ImageSet:
    """Images at model size (float (N, 3, H, W) in [0, 1]) and a few words on where they came from."""

    images: torch.Tensor
    origin: str


def checkpoint_data_config(cfg: Config, ckpt: dict[str, Any], imgsz: tuple[int, int]) -> DataConfig | None:
    """The dataset the checkpoint was trained on (split the same way), at model size; None if it names none.

    ``data=`` (and ``preset=``) replace only the location, so a dataset moved to another machine keeps the
    training run's split and the "test" images stay the ones the model never saw.
    """
    trained = (ckpt.get("config") or {}).get("data")
    data: DataConfig | None = None
    if trained:
        try:
            data = load_config({"data": trained}).data
        except ConfigError:
            data = None
    if cfg.data.dataset is not None:
        moved = {"dataset": cfg.data.dataset, "preset": cfg.data.preset or (data.preset if data else None)}
        data = data.model_copy(update=moved) if data else cfg.data
    if data is None:
        return None
    return data.model_copy(update={"imgsz": tuple(imgsz), "cache": "none", "augment": False})


def open_dataset(data: DataConfig | None) -> tuple[Any, str]:
    """``(DatasetSpec or None, reason)``: a dataset that is not reachable here is not an error, only a note."""
    if data is None:
        return None, "the checkpoint names no dataset"
    from mobileseg.data import DataError, load_dataset

    try:
        return load_dataset(data), ""
    except (DataError, ConfigError, OSError, ValueError) as e:
        return None, f"dataset not reachable ({str(e).splitlines()[0][:160]})"


def split_images(spec: Any, splits: str | Sequence[str], imgsz: tuple[int, int], n: int) -> ImageSet | None:
    """Up to ``n`` images decoded at model size, spread evenly over the first split, topped up from the next ones.

    Deterministic (the same images on every run); None when the splits are empty or the dataset is missing.
    """
    from mobileseg.data import SegmentationDataset

    if not spec:
        return None
    tensors: list[torch.Tensor] = []
    used: list[str] = []
    for split in [splits] if isinstance(splits, str) else splits:
        want = n - len(tensors)
        if want <= 0 or not spec.splits.get(split):
            continue
        ds = SegmentationDataset(spec, split, imgsz, cache="none")
        idx = np.unique(np.linspace(0, len(ds) - 1, min(want, len(ds))).round().astype(int))
        tensors += [ds.load(int(i))[0] for i in idx]
        used.append(f"{len(idx)} {split}")
    if not tensors:
        return None
    return ImageSet(torch.stack(tensors).float().div(255), f"{' + '.join(used)} images of {spec.source}")


def source_images(source: str | None, imgsz: tuple[int, int], n: int) -> ImageSet | None:
    """Up to ``n`` readable images from ``source=``, resized to the model size; None if there are none."""
    if not source:
        return None
    from PIL import Image

    files, _ = resolve_source(source)
    h, w = imgsz
    tensors = []
    for f in files:
        if len(tensors) >= n:
            break
        try:
            im = to_rgb(f).resize((w, h), Image.Resampling.BILINEAR)
        except (OSError, ValueError, SyntaxError):  # DataError is a ValueError
            continue
        tensors.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    if not tensors:
        return None
    return ImageSet(torch.stack(tensors).float().div(255), f"{len(tensors)} images from {source}")


def noise_images(imgsz: tuple[int, int], n: int, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.rand(n, 3, *imgsz, generator=g), f"{n} random-noise images")


def evaluate_onnx(
    path: str | Path,
    spec: Any,
    split: str,
    imgsz: tuple[int, int],
    batch: int = 8,
    conf: float = 0.5,
    threads: int | None = None,
) -> dict[str, float]:
    """Exact split metrics of an ONNX model (one confusion matrix over all pixels, at model size)."""
    from mobileseg.data import SegmentationDataset

    backend = OnnxBackend(path, threads)
    ds = SegmentationDataset(spec, split, imgsz, cache="none")
    cm = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    for start in range(0, len(ds), batch):
        items = [ds[i] for i in range(start, min(start + batch, len(ds)))]
        images = torch.stack([im for im, _ in items])
        targets = torch.stack([m for _, m in items])
        cm.update(targets, logits_to_pred(backend(images), conf))
    return cm.compute()


# ---------------------------------------------------------------------------------------------------- command
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
    """``best.pt`` -> ``best.onnx`` beside it; ``out=`` may name a file (with the suffix) or a folder."""
    suffix = EXPORT_SUFFIX[fmt]
    if out:
        target = Path(out)
        if target.suffix.lower() in (suffix, *TORCHSCRIPT_SUFFIXES) and not target.is_dir():
            return target
        return target / f"{weights.stem}{suffix}"
    return weights.with_suffix(suffix)


def int8_path_for(path: Path) -> Path:
    """``best.onnx`` -> ``best.int8.onnx``."""
    return path.with_name(f"{path.stem}.int8.onnx")


def export(cfg: Config | dict[str, Any] | str | None = None, **overrides: Any) -> ExportResult:
    """Export ``weights`` (a checkpoint) to ``format`` with a parity check, and optionally to int8 ONNX.

    Raises:
        ExportError: the export failed or its parity check failed (the figures are in the message).
        ConfigError: int8 asked for with TorchScript.
    """
    cfg = resolve_config(cfg, overrides)
    ec, rt = cfg.export, cfg.runtime
    if not rt.weights:
        raise ValueError("no model given: pass weights=<path to best.pt>")
    weights = Path(rt.weights)
    if weights.suffix.lower() in (".onnx", *TORCHSCRIPT_SUFFIXES):
        raise ValueError(f"{weights} is already an exported model; export needs the checkpoint (.pt)")
    if ec.int8 and ec.format != "onnx":
        raise ConfigError("int8=true needs format=onnx (int8 quantization is for ONNX Runtime)")
    log = print if rt.verbose else (lambda *a, **k: None)
    threads = setup_threads(rt.threads)

    from mobileseg.engine.checkpoint import load_checkpoint
    from mobileseg.models import Segmenter

    ckpt = load_checkpoint(weights)
    model = Segmenter.from_checkpoint(ckpt, source=str(weights)).eval()
    info = ModelInfo.from_checkpoint(ckpt, model)
    path = default_output(weights, ec.format, cfg.predict.out)
    spec, why_not = open_dataset(checkpoint_data_config(cfg, ckpt, info.imgsz))
    n = max(2, cfg.train.batch)
    parity_set = split_images(spec, ("test", "val"), info.imgsz, n) or source_images(cfg.predict.source, info.imgsz, n)
    if parity_set is None:
        warn(
            f"no real images for the parity check ({why_not or 'no test/val split'}; no source=): "
            f"checking on random noise, which exercises the graph but not the model's typical inputs"
        )
        parity_set = noise_images(info.imgsz, n, rt.seed)

    calib = None
    if ec.int8:  # find calibration images before any work, so a missing dataset fails in a second
        k = ec.calib_images
        calib = split_images(spec, "train", info.imgsz, k) or source_images(cfg.predict.source, info.imgsz, k)
        if calib is None:
            raise ExportError(
                f"int8 needs calibration images: {why_not or 'the dataset has no train split'}; "
                f"pass data=<dataset> or source=<folder of typical images>"
            )

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
        result.int8 = _export_int8(cfg, model, path, spec, calib, parity_set, info, threads, log)
    log(f"Export saved to {path}" + (f" and {result.int8.path}" if result.int8 else ""))
    return result


def _export_int8(
    cfg: Config,
    model: nn.Module,
    fp32: Path,
    spec: Any,
    calib: ImageSet,
    parity_set: ImageSet,
    info: ModelInfo,
    threads: int,
    log: Any,
) -> Int8Report:
    """Quantize with the calibration images, then measure agreement, speed and IoU against the fp32 ONNX model."""
    from mobileseg.benchmarking import Candidate, measure_interleaved

    out = int8_path_for(fp32)
    start = time.perf_counter()
    quantize_int8(model, out, calib.images, info, cfg.export.opset)
    log(
        f"int8: {out} ({out.stat().st_size / 1e6:.1f} MB) calibrated on {calib.origin} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    with quiet():
        ref, q = OnnxBackend(fp32, threads), OnnxBackend(out, threads)
        max_abs, differ = compare(ref, q, parity_set.images, cfg.predict.conf)
        x = torch.rand(cfg.train.batch, 3, *info.imgsz, generator=torch.Generator().manual_seed(0))
        candidates = [
            Candidate("fp32", lambda: ref(x[:1]), lambda: ref(x)),
            Candidate("int8", lambda: q(x[:1]), lambda: q(x)),
        ]
        fp32_row, int8_row = measure_interleaved(candidates, cfg.train.batch, warmup=1, runs=2, batch_runs=5)
        fp32_rate, int8_rate = fp32_row.images_s, int8_row.images_s
    report = Int8Report(
        out, calib.origin, 1 - differ, max_abs, fp32_rate, int8_rate, int8_rate / fp32_rate if fp32_rate else math.nan
    )
    log(
        f"int8 vs fp32 on {parity_set.origin}: {100 * report.agreement:.2f} % of mask pixels agree, "
        f"max |dp| {max_abs:.2e}"
    )
    log(
        f"int8 speed (batch {cfg.train.batch}, {threads} threads): fp32 {fp32_rate:.1f} images/s, "
        f"int8 {int8_rate:.1f} images/s ({report.speedup:.2f}x)"
    )
    split = next((s for s in ("test", "val") if spec and spec.splits.get(s)), None)
    if split is None:
        log("int8 IoU change: no labelled test/val split reachable, not measured")
        return report
    with quiet():
        m32 = evaluate_onnx(fp32, spec, split, info.imgsz, cfg.train.batch, cfg.predict.conf, threads)
        m8 = evaluate_onnx(out, spec, split, info.imgsz, cfg.train.batch, cfg.predict.conf, threads)
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
            f"try more calib_images or keep the fp32 model"
        )
    return report


__all__ = [
    "ExportError",
    "ExportResult",
    "Int8Report",
    "ParityReport",
    "check_parity",
    "compare",
    "export",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "quantize_int8",
    "subpixel_rewrite",
    "read_onnx_metadata",
]
