"""What the phone exports (ExecuTorch ``.pte``, LiteRT ``.tflite``) share: the extra, the model prep, parity.

Both formats are exported at batch 1 and a fixed input size (what phone runtimes are fastest at and what the
apps feed), so :class:`MobileBackend` loops over a batch and checks the size, and the metadata says
``dynamic_hw: false`` so ``predict`` resizes images to the model size first.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn

from mobileseg.deploy.heads import check_outputs, describe_output, wrap
from mobileseg.deploy.int8 import resolve_float_layers
from mobileseg.deploy.parity import ParityReport, as_batch, compare
from mobileseg.deploy.phone_runtimes import METADATA_KEY, MobileBackend, one_line, require  # noqa: F401 (re-exported)
from mobileseg.deploy.rewrites import fold_batchnorm
from mobileseg.engine.metrics import logits_to_pred
from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

FP32_PROB_ATOL = 1e-3  # max |p_mobile - p_torch| for a float export (XNNPACK's kernels reorder sums: ~1e-6)
FP32_MASK_DIFF_MAX = 1e-3  # share of mask pixels a float export may flip (pixels on the threshold)
MASK_OUTPUT_AGREEMENT_MIN = 0.99  # a float export with outputs=mask: only the class map can be compared
INT8_AGREEMENT_MIN = 0.97  # share of mask pixels an int8 export must keep equal to the PyTorch model's


def prepare(model: nn.Module, outputs: str, binary: bool, conf: float, subpixel: bool = False) -> nn.Module:
    """The graph to export: BatchNorm folded, NCHW (contiguous) weights, optional sub-pixel deconvs, the head.

    Why contiguous: the Segmenter keeps channels-last weights for fast PyTorch CPU training; XNNPACK's
    channels-last pass in ExecuTorch asserts NCHW weights ("Expected ... to be NCHW"), and the layout changes
    no result. ``subpixel``: the LiteRT converter cannot legalize the decoder's stride-2 transposed convolutions
    with Keras-'same' output padding, so they become the exactly equivalent conv + pixel shuffle.
    """
    from mobileseg.deploy.rewrites import subpixel_rewrite

    prepared = fold_batchnorm(model).to(memory_format=torch.contiguous_format)
    if subpixel:
        prepared = subpixel_rewrite(prepared)
    return wrap(prepared, outputs, binary, conf).eval()


def metadata(info: ModelInfo, outputs: str, conf: float, **extra: str) -> dict[str, str]:
    """``info.to_metadata()`` for a batch-1, fixed-size graph with ``outputs`` (and any format notes)."""
    fixed = dataclasses.replace(info, dynamic_hw=False)
    meta = {**fixed.to_metadata(), "outputs": outputs, "output": describe_output(outputs, info.binary, conf)}
    meta.update({"batch": "1", "conf": str(conf), **extra})
    return meta


def sample_input(info: ModelInfo) -> torch.Tensor:
    h, w = info.imgsz
    return torch.rand(1, info.in_channels, h, w, generator=torch.Generator().manual_seed(0))


def calibration_batch(calib_images: Any, what: str) -> torch.Tensor:
    """Calibration images as float (N, 3, H, W), or ExportError saying that int8 needs them."""
    if calib_images is None or len(calib_images) == 0:
        raise ExportError(
            f"{what} int8 needs calibration images (calib_images=): pass typical training images at model size"
        )
    return as_batch(calib_images)


# ---------------------------------------------------------------------------------------------------- runtime


# ---------------------------------------------------------------------------------------------------- parity


def check_mobile_parity(
    model: nn.Module,
    backend: MobileBackend,
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    int8: bool = False,
    conf: float = 0.5,
) -> ParityReport:
    """Compare an exported phone model with the PyTorch model it came from, on ``images``.

    fp32: probabilities within ``FP32_PROB_ATOL`` (1e-3) and fewer than 0.1 % of mask pixels different.
    int8: at least ``INT8_AGREEMENT_MIN`` (97 %) of mask pixels equal (probabilities are reported, not judged).
    ``outputs=mask`` graphs: only the class maps can be compared (99 % for fp32, 97 % for int8); the reported
    probability difference is NaN.

    Example:
        >>> report = check_mobile_parity(model, ExecutorchBackend("best.pte"), images)  # doctest: +SKIP
        >>> report.ok, report.max_abs_diff  # doctest: +SKIP
        (True, 2.1e-07)
    """
    model = model.eval().cpu()
    batch = as_batch(images)
    outputs = check_outputs(backend.outputs)
    if outputs == "mask":
        with torch.inference_mode():
            want = torch.cat([logits_to_pred(model(batch[i : i + 4]), conf) for i in range(0, len(batch), 4)])
        got = backend.raw(batch).long()
        if got.shape != want.shape:
            raise ExportError(f"{backend.path}: class map shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        max_abs, fraction = math.nan, (got != want).float().mean().item()
        limit = 1 - (INT8_AGREEMENT_MIN if int8 else MASK_OUTPUT_AGREEMENT_MIN)
    else:
        max_abs, fraction = compare(model, backend, batch, conf)  # type: ignore[arg-type]
        limit = 1 - INT8_AGREEMENT_MIN if int8 else FP32_MASK_DIFF_MAX
    atol = math.inf if int8 or outputs == "mask" else FP32_PROB_ATOL
    ok = bool((math.isnan(max_abs) or max_abs <= atol) and fraction <= limit)
    return ParityReport(max_abs, fraction, ok, batch.shape[0], atol, limit)


def pick_check_images(images: Any, calib: torch.Tensor | None, info: ModelInfo) -> torch.Tensor:
    """The images to check on: ``images`` if given, else up to 4 calibration images, else 2 noise images."""
    if images is not None and len(images):
        return as_batch(images)
    if calib is not None:
        return calib[:4]
    return torch.rand(2, info.in_channels, *info.imgsz, generator=torch.Generator().manual_seed(0))


def verify_or_remove(
    path: Path,
    model: nn.Module,
    open_backend: Callable[[Path], MobileBackend],
    images: torch.Tensor,
    int8: bool,
    conf: float,
    what: str,
    log: Callable[[str], None] | None,
) -> ParityReport:
    """Run the parity check on the written file; on failure remove it and raise ExportError with the figures."""
    try:
        report = check_mobile_parity(model, open_backend(path), images, int8=int8, conf=conf)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    if log:
        log(f"{what} parity vs PyTorch: {report}")
    if not report.ok:
        path.unlink(missing_ok=True)  # never leave a file that computes something else where an app looks for it
        raise ExportError(f"the {what} model does not match the PyTorch model: {report}. The file was removed.")
    return report


# ---------------------------------------------------------------------------------------------------- export


class PhoneExportOptions(TypedDict, total=False):
    """The keyword options of every phone export (see :func:`export_phone`)."""

    int8: bool
    calib_images: torch.Tensor | None
    float_layers: Sequence[str] | str
    outputs: str
    conf: float
    check_images: torch.Tensor | None
    threads: int | None
    log: Callable[[str], None] | None


@dataclass(frozen=True)
class PhoneFormat:
    """What differs between the phone formats; :func:`export_phone` does the rest the same way for each.

    Attributes:
        name: the format in messages (``ExecuTorch``, ``LiteRT``).
        what: the config setting that asked for it (``format=executorch``), named when the extra is missing.
        modules: what the format needs imported (the 'mobile' extra), checked before anything is written.
        runtime: the ``runtime`` metadata entry.
        quantization: the ``quantization`` metadata entry of an int8 file, ``{n}`` = the calibration images.
        subpixel: rewrite the decoder's transposed convolutions as conv + pixel shuffle first.
        subpixel_int8: the same for the int8 file (None: as ``subpixel``).
        write: ``(graph, sample, calib or None, metadata, path, float_layers)`` -> the file written (quantized
            when ``calib``, the modules named in ``float_layers`` left in float), or ExportError in one line.
        backend: ``(path, threads)`` -> the runtime that runs the written file.
    """

    name: str
    what: str
    modules: tuple[str, ...]
    runtime: str
    quantization: str
    subpixel: bool
    write: Callable[[nn.Module, torch.Tensor, torch.Tensor | None, dict[str, str], Path, tuple[str, ...]], None]
    backend: Callable[[Path, int | None], MobileBackend]
    subpixel_int8: bool | None = None
    float_layers: bool = False  # the format's quantizer can leave named modules in float (int8_float_layers)


def export_phone(
    model: nn.Module,
    path: str | Path,
    info: ModelInfo,
    fmt: PhoneFormat,
    *,
    int8: bool = False,
    calib_images: torch.Tensor | None = None,
    float_layers: Sequence[str] | str = "auto",
    outputs: str = "logits",
    conf: float = 0.5,
    check_images: torch.Tensor | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``model`` in the phone format ``fmt`` (fp32 or int8) and prove it matches the PyTorch model.

    Args:
        model: the Segmenter (eval; BatchNorm is folded on a copy, the caller's model is not changed).
        path: the file to write.
        info: the model's metadata (input size, classes, ...), embedded in the file.
        int8: quantize (needs ``calib_images``).
        calib_images: float (N, 3, H, W) in [0, 1] at model size: typical training images for int8 ranges.
        float_layers: modules of the model kept in float in an int8 file (``auto``: the ONNX default,
            :data:`~mobileseg.deploy.int8.FLOAT_LAYERS`), where the format's quantizer allows it
            (``PhoneFormat.float_layers``); elsewhere every layer is quantized.
        outputs: ``logits``, ``probs`` or ``mask`` (uint8 class map computed in the graph).
        conf: foreground threshold of a binary ``mask`` graph.
        check_images: images for the parity check (default: calibration images, else noise).
        threads: the runtime's threads for the parity run.
        log: receives the parity line.

    Returns:
        ``path``.

    Raises:
        ExportError: the extra is missing, int8 without calibration images, the conversion failed, or the file does
            not match the model (then removed).

    Example:
        >>> export_phone(Segmenter(1).eval(), "m.pte", info, EXECUTORCH)  # doctest: +SKIP
        PosixPath('m.pte')
    """
    for module in fmt.modules:
        require(module, fmt.what)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    calib = calibration_batch(calib_images, fmt.what) if int8 else None
    subpixel = fmt.subpixel_int8 if int8 and fmt.subpixel_int8 is not None else fmt.subpixel
    graph = prepare(model.eval().cpu(), outputs, info.binary, conf, subpixel=subpixel)
    sample = sample_input(info)
    layers = resolve_float_layers(float_layers) if int8 and fmt.float_layers else ()
    quant = fmt.quantization.format(n=calib.shape[0]) if calib is not None else "none (float32)"
    quant += f"; kept in float: {', '.join(layers)}" if layers else ""
    meta = metadata(info, outputs, conf, runtime=fmt.runtime, quantization=quant)
    fmt.write(graph, sample, calib, meta, path, layers)
    images = pick_check_images(check_images, calib, info)
    what = f"{fmt.name} {'int8' if int8 else 'fp32'}"
    verify_or_remove(path, model, lambda p: fmt.backend(p, threads), images, int8, conf, what, log)
    return path
