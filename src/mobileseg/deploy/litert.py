"""LiteRT (TensorFlow Lite) export (``.tflite``, optionally int8) via litert-torch, and its interpreter as a backend.

Export: ``litert_torch.convert(graph, (sample,))``; the graph is the Segmenter with BatchNorm folded and the
decoder's transposed convolutions rewritten as the equivalent conv + pixel shuffle
(:class:`~mobileseg.deploy.rewrites.SubPixelConvTranspose2d`): the converter cannot legalize a stride-2 transposed
convolution with Keras-'same' output padding. Input stays NCHW float32 in [0, 1], batch 1, at the model size
(the converter adds the NHWC transposes inside; ``litert_torch.to_channel_last_io`` could make the input NHWC for
apps that feed bitmaps, not done here so every backend takes the same tensor).

``int8=True``: full static int8 of the float flatbuffer with ai-edge-quantizer's ``static_wi8_ai8`` recipe
(int8 weights, int8 activations with min/max ranges from ``calib_images``). The quantizer makes the model's
input and output int8 too (``scale``/``zero_point`` in the tensor details): :class:`LiteRTBackend` quantizes
the float image and dequantizes the logits, as an app does (or feeds int8 pixels directly).

Metadata: the ``ModelInfo`` JSON sits in the flatbuffer's ``metadata`` list under ``mobileseg_metadata`` (the
slot TFLite reserves for this; Android reads it with ``MetadataExtractor`` or from the model buffer).

Example:
    >>> export_tflite(model, "best.tflite", info)  # doctest: +SKIP
    PosixPath('best.tflite')
    >>> LiteRTBackend("best.tflite", threads=2)(torch.rand(1, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg.deploy.mobile import (
    calibration_batch,
    metadata,
    pick_check_images,
    prepare,
    quiet,
    sample_input,
    verify_or_remove,
)
from mobileseg.deploy.phone_runtimes import METADATA_KEY, LiteRTBackend, one_line, read_tflite_metadata, require
from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

SUFFIX = ".tflite"
WHAT = "format=tflite"


def set_tflite_metadata(path: str | Path, meta: dict[str, str]) -> None:
    """Store ``meta`` as JSON in the flatbuffer's metadata list (entry ``mobileseg_metadata``), replacing it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):  # weights stored after the flatbuffer (> 2 GB)
        raise ExportError(f"{path}: weights outside the flatbuffer are not supported for metadata")
    model.metadata = [m for m in model.metadata or [] if m.name != METADATA_KEY]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def _quantize_static(float_path: Path, out_path: Path, calib: torch.Tensor) -> None:
    """Full int8 of a float ``.tflite`` with ai-edge-quantizer (``static_wi8_ai8``), calibrated on ``calib``.

    Why not litert-torch's own PT2E route (``quant_config=``): for this model it wrote a graph whose masks differed
    from PyTorch on 34 % of pixels (PT2E in PyTorch itself differed on 1 %); quantizing the float flatbuffer, whose
    parity is proven, agrees with PyTorch as closely as ExecuTorch's int8.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(float_path)).get_signature_list()
    name, spec = next(iter(signatures.items()))
    input_name = spec["inputs"][0]
    qt = quantizer.Quantizer(str(float_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    samples = [{input_name: calib[i : i + 1].numpy()} for i in range(calib.shape[0])]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):  # a summary and progress bars
        result = qt.quantize(qt.calibrate({name: samples}, num_threads=1))
    result.export_model(str(out_path), overwrite=True)


def export_tflite(
    model: nn.Module,
    path: str | Path,
    info: ModelInfo,
    *,
    int8: bool = False,
    calib_images: torch.Tensor | None = None,
    outputs: str = "logits",
    conf: float = 0.5,
    check_images: torch.Tensor | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``model`` as a LiteRT ``.tflite`` (fp32 or full int8) and prove it matches the PyTorch model.

    Args:
        model: the Segmenter (eval; it is copied, folded and rewritten here, not changed).
        path: the ``.tflite`` to write.
        info: the model's metadata, embedded in the flatbuffer's metadata list.
        int8: full static int8 via ai-edge-quantizer (needs ``calib_images``).
        calib_images: float (N, 3, H, W) in [0, 1] at model size: typical training images for int8 ranges.
        outputs: ``logits``, ``probs`` or ``mask`` (uint8 class map computed in the graph).
        conf: foreground threshold of a binary ``mask`` graph.
        check_images: images for the parity check (default: calibration images, else noise).
        threads: interpreter threads for the parity run.
        log: receives the parity line.

    Returns:
        ``path``.

    Raises:
        ExportError: the extra is missing, conversion failed, or the file does not match the model (then removed).

    Example:
        >>> export_tflite(Segmenter(3).eval(), "m.tflite", info, outputs="mask")  # doctest: +SKIP
        PosixPath('m.tflite')
    """
    litert_torch = require("litert_torch", WHAT)
    require("ai_edge_litert.interpreter", WHAT)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    calib = calibration_batch(calib_images, WHAT) if int8 else None
    graph = prepare(model.eval().cpu(), outputs, info.binary, conf, subpixel=True)
    sample = sample_input(info)
    quant = (
        f"int8 static (ai-edge-quantizer static_wi8_ai8: int8 weights and activations, min/max), calibrated on "
        f"{calib.shape[0]} images; int8 input/output (see the tensors' scale/zero_point)"
        if calib is not None
        else "none (float32)"
    )
    meta = metadata(info, outputs, conf, runtime="litert (tflite)", quantization=quant)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its progress bars are noise in a CLI log
    try:
        with quiet(), torch.no_grad(), tempfile.TemporaryDirectory(prefix="mobileseg-tflite-") as tmp:
            float_path = Path(tmp) / "float.tflite" if calib is not None else path
            litert_torch.convert(graph, (sample,)).export(str(float_path))
            set_tflite_metadata(float_path, meta)  # the quantizer keeps the flatbuffer's metadata entries
            if calib is not None:
                _quantize_static(float_path, path, calib)
        if read_tflite_metadata(path) != meta:
            raise ExportError(f"{path}: the metadata did not survive quantization")
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    except Exception as e:  # the converter raises many types (with MLIR dumps); one readable line for the user
        path.unlink(missing_ok=True)
        raise ExportError(f"LiteRT export failed: {one_line(e)}") from e
    images = pick_check_images(check_images, calib, info)
    what = f"LiteRT {'int8' if int8 else 'fp32'}"
    verify_or_remove(path, model, lambda p: LiteRTBackend(p, threads), images, int8, conf, what, log)
    return path


__all__ = ["LiteRTBackend", "export_tflite", "read_tflite_metadata", "set_tflite_metadata"]
