"""ONNX graph surgery for the int8 graph: exact rewrites that remove copies ONNX Runtime would otherwise make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


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


__all__ = ["fuse_pads_into_convs", "shapes_from_quantized"]
