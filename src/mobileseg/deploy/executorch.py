"""ExecuTorch export (``.pte``, XNNPACK-delegated, optionally int8) and its Python runtime as a backend.

Export: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``, the file
the ExecuTorch Android (``org.pytorch.executorch.Module``) and iOS (``ExecuTorch`` Swift package) runtimes load.
``int8=True`` quantizes first with PT2E (``XNNPACKQuantizer``, symmetric per-channel int8 weights, int8
activations, min/max observers run over ``calib_images``), then lowers the quantized graph to XNNPACK. The modules
named in ``float_layers`` (default: the stem and the first block, as for ONNX) stay float; XNNPACK runs them in
fp32 in the same delegate.

Metadata: the ``ModelInfo`` JSON is embedded in the program as a constant method ``mobileseg_metadata`` (a
method with no inputs returning one string), so one file carries everything; apps read it with
``module.execute("mobileseg_metadata")``. The graph is batch 1 at the model's input size (NCHW float32 in [0, 1]).

Example:
    >>> export_executorch(model, "best.pte", info, int8=True, calib_images=train_images)  # doctest: +SKIP
    PosixPath('best.pte')
    >>> ExecutorchBackend("best.pte")(torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([2, 1, 224, 224])
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mobileseg.deploy.heads import ExportHead
from mobileseg.deploy.mobile import PhoneExportOptions, PhoneFormat, export_phone
from mobileseg.deploy.phone_runtimes import METADATA_KEY, ExecutorchBackend, one_line, quiet_libraries
from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from torch.fx import Node
    from typing_extensions import Unpack

SUFFIX = ".pte"
WHAT = "format=executorch"


def _lower(program: Any, meta: dict[str, str]) -> bytes:
    """An exported program lowered to XNNPACK with the metadata method, as ``.pte`` bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], constant_methods={METADATA_KEY: json.dumps(meta)}
    )
    return edge.to_executorch().buffer


def float_filter(graph: nn.Module, layers: tuple[str, ...]) -> Callable[[Node], bool] | None:
    """The quantizer's node filter that leaves the modules ``layers`` (paths in the Segmenter) in float.

    Why a filter: ``XNNPACKQuantizer.set_module_name(name, None)``, the documented way, is refused ("not supported
    yet"); ``set_filter_function`` is the public hook its annotators consult for every pattern they match.
    """
    if not layers:
        return None
    prefix = "model." if isinstance(graph, ExportHead) else ""  # outputs=probs/mask wrap the Segmenter
    modules = {name for name, _ in graph.named_modules()}
    for layer in layers:
        if prefix + layer not in modules:
            raise ExportError(f"int8_float_layers: {layer!r} is not a module of the model (e.g. encoder.features.1)")
    roots = tuple(prefix + layer for layer in layers)

    def quantize(node: Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        return not any(fqn == r or fqn.startswith(r + ".") for fqn, _ in stack.values() for r in roots)

    return quantize


def _quantize(graph: nn.Module, sample: torch.Tensor, calib: torch.Tensor, layers: tuple[str, ...] = ()) -> nn.Module:
    """PT2E int8 for XNNPACK: symmetric per-channel weights, int8 activations calibrated on ``calib``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    keep_float = float_filter(graph, layers)
    if keep_float is not None:
        quantizer.set_filter_function(keep_float)
    prepared = prepare_pt2e(torch.export.export(graph, (sample,)).module(), quantizer)
    with torch.no_grad():
        for i in range(calib.shape[0]):
            prepared(calib[i : i + 1])
    return convert_pt2e(prepared)


def _write(
    graph: nn.Module,
    sample: torch.Tensor,
    calib: torch.Tensor | None,
    meta: dict[str, str],
    path: Path,
    float_layers: tuple[str, ...] = (),
) -> None:
    """Quantize ``graph`` with PT2E when calibration images are given, lower it to XNNPACK, write the ``.pte``."""
    try:
        with quiet_libraries(), torch.no_grad():
            if calib is not None:
                graph = _quantize(graph, sample, calib, float_layers)
            path.write_bytes(_lower(torch.export.export(graph, (sample,)), meta))
    except ExportError:
        raise
    except Exception as e:  # torch.export / lowering raise many types; one readable line for the user
        path.unlink(missing_ok=True)
        raise ExportError(f"ExecuTorch export failed: {one_line(e)}") from e


EXECUTORCH = PhoneFormat(
    "ExecuTorch",
    WHAT,
    ("executorch.exir",),
    "executorch (XNNPACK delegate)",
    "int8 PT2E XNNPACKQuantizer (per-channel symmetric weights, int8 activations), calibrated on {n} images",
    subpixel=False,
    write=_write,
    backend=ExecutorchBackend,
    # int8: the transposed convolutions as sub-pixel convolutions quantize better (pets test IoU change -0.0098
    # against -0.0103 quantized as transposed convolutions); the fp32 file keeps them (smaller: 25.9 vs 40.4 MB).
    subpixel_int8=True,
    float_layers=True,
)


def export_executorch(
    model: nn.Module, path: str | Path, info: ModelInfo, **options: Unpack[PhoneExportOptions]
) -> Path:
    """Write ``model`` as an XNNPACK ``.pte`` (fp32 or PT2E int8) and prove it matches the PyTorch model.

    ``info`` is embedded as the ``mobileseg_metadata`` method. The options (``int8``, ``calib_images``,
    ``float_layers``, ``outputs``, ``conf``, ``check_images``, ``threads``, ``log``) and errors are
    :func:`export_phone`'s;
    ``threads`` sizes ExecuTorch's process-wide threadpool for the parity run (None leaves it).

    Example:
        >>> export_executorch(Segmenter(1).eval(), "m.pte", info)  # doctest: +SKIP
        PosixPath('m.pte')
    """
    return export_phone(model, path, info, EXECUTORCH, **options)


__all__ = ["ExecutorchBackend", "export_executorch"]
