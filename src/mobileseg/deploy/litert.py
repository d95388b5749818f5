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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mobileseg.deploy.mobile import PhoneExportOptions, PhoneFormat, export_phone
from mobileseg.deploy.phone_runtimes import (
    METADATA_KEY,
    LiteRTBackend,
    native_log_filter,
    one_line,
    quiet_libraries,
    read_tflite_metadata,
    require,
)
from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack

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


def _write(
    graph: nn.Module,
    sample: torch.Tensor,
    calib: torch.Tensor | None,
    meta: dict[str, str],
    path: Path,
    float_layers: tuple[str, ...] = (),
) -> None:
    """Convert ``graph`` to a float ``.tflite`` with the metadata, then quantize it fully when calibration images are
    given; the metadata must survive. ``float_layers`` is always empty here: ai-edge-quantizer's recipes select ops
    of the converted graph, which carry no module names (``PhoneFormat.float_layers`` is False)."""
    litert_torch = require("litert_torch", WHAT)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its progress bars are noise in a CLI log
    try:
        with (
            quiet_libraries(),
            native_log_filter(),
            torch.no_grad(),
            tempfile.TemporaryDirectory(prefix="mobileseg-tflite-") as tmp,
        ):
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


def export_tflite(model: nn.Module, path: str | Path, info: ModelInfo, **options: Unpack[PhoneExportOptions]) -> Path:
    """Write ``model`` as a LiteRT ``.tflite`` (fp32 or full static int8) and prove it matches the PyTorch model.

    The model is copied, folded and rewritten (sub-pixel deconvolutions), not changed; ``info`` goes into the
    flatbuffer's metadata list. Options and errors as in :func:`mobileseg.deploy.mobile.export_phone`; ``threads``
    are the interpreter's for the parity run.

    Example:
        >>> export_tflite(Segmenter(3).eval(), "m.tflite", info, outputs="mask")  # doctest: +SKIP
        PosixPath('m.tflite')
    """
    return export_phone(model, path, info, LITERT, **options)


LITERT = PhoneFormat(
    name="LiteRT",
    what=WHAT,
    modules=("litert_torch", "ai_edge_litert.interpreter"),
    runtime="litert (tflite)",
    quantization="int8 static (ai-edge-quantizer static_wi8_ai8: int8 weights and activations, min/max), calibrated "
    "on {n} images; int8 input/output (see the tensors' scale/zero_point)",
    subpixel=True,
    write=_write,
    backend=LiteRTBackend,
)


__all__ = ["LiteRTBackend", "export_tflite", "read_tflite_metadata", "set_tflite_metadata"]
