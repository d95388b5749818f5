"""What an exported graph returns: raw logits, probabilities, or the finished class map.

A phone app that only wants the mask should not have to re-implement the sigmoid/softmax and the threshold
(and get the threshold subtly wrong); with ``outputs=mask`` the graph itself returns a ``uint8`` class map, the
same one :func:`mobileseg.engine.metrics.logits_to_pred` computes. The wrapper is format-neutral: ONNX,
TorchScript, ExecuTorch and LiteRT exports can all use it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

OutputKind = Literal["logits", "probs", "mask"]
OUTPUT_KINDS: tuple[str, ...] = ("logits", "probs", "mask")


def describe_output(outputs: str, binary: bool, conf: float = 0.5) -> str:
    """One line for the metadata's ``output`` key: what the graph's single output holds."""
    if outputs == "logits":
        return "logits (N, C, H, W): sigmoid when binary (C=1), softmax otherwise"
    if outputs == "probs":
        return "probabilities float32 (N, C, H, W): " + ("sigmoid, C=1" if binary else "softmax over C")
    rule = f"1 where sigmoid(logit) > {conf}" if binary else "argmax over classes"
    return f"class map uint8 (N, H, W): {rule}"


def check_outputs(outputs: str) -> str:
    """``outputs`` itself, or ValueError naming the choices."""
    if outputs not in OUTPUT_KINDS:
        raise ValueError(f"outputs={outputs!r} is not one of {', '.join(OUTPUT_KINDS)}")
    return outputs


class ExportHead(nn.Module):
    """``model`` followed by the post-processing an app would otherwise write itself.

    Args:
        model: returns logits (N, C, H, W).
        outputs: ``logits`` (unchanged), ``probs`` (sigmoid for one channel, softmax over channels otherwise) or
            ``mask`` (uint8 (N, H, W): logit above the threshold's logit for one channel, argmax otherwise).
        binary: the model has one output channel (sigmoid); None reads ``model.binary``.
        conf: foreground threshold of a binary mask; compared in logit space (``logit > log(conf / (1 - conf))``),
            exactly as :func:`~mobileseg.engine.metrics.logits_to_pred`, so no sigmoid runs for a mask.

    Example:
        >>> head = ExportHead(Segmenter(3).eval(), "mask")  # doctest: +SKIP
        >>> head(torch.rand(1, 3, 64, 64)).dtype  # doctest: +SKIP
        torch.uint8
    """

    def __init__(self, model: nn.Module, outputs: str = "logits", binary: bool | None = None, conf: float = 0.5):
        super().__init__()
        self.model = model
        self.outputs = check_outputs(outputs)
        self.binary = bool(getattr(model, "binary", False) if binary is None else binary)
        if not 0 < conf < 1:
            raise ValueError(f"conf must be in (0, 1), got {conf}")
        self.logit_threshold = math.log(conf / (1 - conf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.outputs == "logits":
            return logits
        if self.outputs == "probs":
            return logits.sigmoid() if self.binary else logits.softmax(1)
        if self.binary:
            return (logits[:, 0] > self.logit_threshold).to(torch.uint8)
        return logits.argmax(1).to(torch.uint8)


def wrap(model: nn.Module, outputs: str, binary: bool, conf: float = 0.5) -> nn.Module:
    """``model`` unchanged for logits (no extra module in the graph), else an :class:`ExportHead`."""
    return model if check_outputs(outputs) == "logits" else ExportHead(model, outputs, binary, conf)
