"""ONNX export with dynamic batch (and height/width where the graph allows) and the model's metadata embedded.

The TorchScript-based exporter (``dynamo=False``: offline, simple dynamic axes) is used. Metadata for any
consumer sits in ``metadata_props``: class names, input size, preprocessing, binary flag, palette, ignore_index,
mobileseg version (:class:`~mobileseg.models.model_file.ModelInfo`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from mobileseg.engine.predictor import warn
from mobileseg.errors import ExportError, WeightsError
from mobileseg.models.model_file import INPUT_NAME, OUTPUT_NAME, ModelInfo

from .runtimes import OnnxBackend, quiet


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
    """The ``metadata_props`` of an ONNX file as a dict (without loading the weights into a session).

    Raises:
        WeightsError: the file is not a readable ONNX model.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: one line naming the file
        detail = " ".join(str(e).split())[:160]
        raise WeightsError(f"{path} is not a readable ONNX model (corrupt or truncated?): {detail}") from None
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
    dummy = torch.rand(1, info.in_channels, h, w)  # the channel count is fixed in the graph
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
                OnnxBackend(path)(torch.rand(1, info.in_channels, h + 32, w + 32))
        except Exception as e:
            warn(
                f"the ONNX graph does not run at another input size ({str(e).splitlines()[0][:120]}); "
                f"re-exporting with a fixed {h}x{w} input"
            )
            return export_onnx(model, path, info, opset, dynamic_hw=False)
    info = dataclasses.replace(info, dynamic_hw=dynamic_hw)
    set_onnx_metadata(path, {**info.to_metadata(), "opset": str(opset)})
    return path, info


__all__ = ["export_onnx", "read_onnx_metadata", "set_onnx_metadata"]
