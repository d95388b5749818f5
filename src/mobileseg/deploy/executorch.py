"""ExecuTorch export (``.pte``, XNNPACK-delegated, optionally int8) and its Python runtime as a backend.

Export: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``, the file
the ExecuTorch Android (``org.pytorch.executorch.Module``) and iOS (``ExecuTorch`` Swift package) runtimes load.
``int8=True`` quantizes first with PT2E (``XNNPACKQuantizer``, symmetric per-channel int8 weights, int8
activations, min/max observers run over ``calib_images``), then lowers the quantized graph to XNNPACK.

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
from typing import Any

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
from mobileseg.deploy.phone_runtimes import METADATA_KEY, ExecutorchBackend, one_line, require
from mobileseg.errors import ExportError
from mobileseg.models.model_file import ModelInfo

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


def _quantize(graph: nn.Module, sample: torch.Tensor, calib: torch.Tensor) -> nn.Module:
    """PT2E int8 for XNNPACK: symmetric per-channel weights, int8 activations calibrated on ``calib``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(graph, (sample,)).module(), quantizer)
    with torch.no_grad():
        for i in range(calib.shape[0]):
            prepared(calib[i : i + 1])
    return convert_pt2e(prepared)


def export_executorch(
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
    """Write ``model`` as an XNNPACK ``.pte`` (fp32 or int8) and prove it matches the PyTorch model.

    Args:
        model: the Segmenter (eval; BatchNorm is folded here, the caller's model is not changed).
        path: the ``.pte`` to write.
        info: the model's metadata (input size, classes, ...), embedded as the ``mobileseg_metadata`` method.
        int8: quantize with PT2E (needs ``calib_images``).
        calib_images: float (N, 3, H, W) in [0, 1] at model size: typical training images for int8 ranges.
        outputs: ``logits``, ``probs`` or ``mask`` (uint8 class map computed in the graph).
        conf: foreground threshold of a binary ``mask`` graph.
        check_images: images for the parity check (default: calibration images, else noise).
        threads: ExecuTorch threadpool size for the parity run (process-wide; None leaves it).
        log: receives the parity line.

    Returns:
        ``path``.

    Raises:
        ExportError: the extra is missing, lowering failed, or the file does not match the model (then removed).

    Example:
        >>> export_executorch(Segmenter(1).eval(), "m.pte", info)  # doctest: +SKIP
        PosixPath('m.pte')
    """
    require("executorch.exir", WHAT)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    calib = calibration_batch(calib_images, WHAT) if int8 else None
    graph = prepare(model.eval().cpu(), outputs, info.binary, conf)
    sample = sample_input(info)
    quant = (
        f"int8 PT2E XNNPACKQuantizer (per-channel symmetric weights, int8 activations), calibrated on "
        f"{calib.shape[0]} images"
        if calib is not None
        else "none (float32)"
    )
    meta = metadata(info, outputs, conf, runtime="executorch (XNNPACK delegate)", quantization=quant)
    try:
        with quiet(), torch.no_grad():
            if calib is not None:
                graph = _quantize(graph, sample, calib)
            path.write_bytes(_lower(torch.export.export(graph, (sample,)), meta))
    except ExportError:
        raise
    except Exception as e:  # torch.export / lowering raise many types; one readable line for the user
        path.unlink(missing_ok=True)
        raise ExportError(f"ExecuTorch export failed: {one_line(e)}") from e
    images = pick_check_images(check_images, calib, info)
    what = f"ExecuTorch {'int8' if int8 else 'fp32'}"
    verify_or_remove(path, model, lambda p: ExecutorchBackend(p, threads), images, int8, conf, what, log)
    return path


__all__ = ["ExecutorchBackend", "export_executorch"]
