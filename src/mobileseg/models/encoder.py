"""MobileNetV2 encoder with the skip taps of the TensorFlow "Image segmentation" tutorial.

The tutorial takes five Keras layer outputs as skips. In torchvision's layout they are:

==========================  ===========================================  ======  ==============
Keras layer                 torchvision module                           stride  channels (x1.0)
==========================  ===========================================  ======  ==============
``block_1_expand_relu``     ``features[2].conv[0]`` (1x1 expand, ReLU6)  2       96
``block_3_expand_relu``     ``features[4].conv[0]``                      4       144
``block_6_expand_relu``     ``features[7].conv[0]``                      8       192
``block_13_expand_relu``    ``features[14].conv[0]``                     16      576
``block_16_project``        ``features[17]`` output (project + BN)       32      320
==========================  ===========================================  ======  ==============

The expand taps sit *inside* inverted-residual blocks, so those blocks are run in two halves. The module tree
is torchvision's own (``features.0`` ... ``features.17``), which keeps state-dict keys identical and lets any
torchvision ``mobilenet_v2`` weight file load directly. ``features[18]`` (the 1280-channel head conv) comes
after the last tap, so it is dropped: it would cost compute and parameters for nothing.

Note: Keras' ``block_16_project`` is the projection conv *before* its BatchNorm; we tap after the BN (the
block's output), which is what the next torchvision layer consumes and what ImageNet weights were trained with.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from .weights import is_pretrained, load_encoder_weights

EXPAND_TAPS: tuple[int, ...] = (2, 4, 7, 14)  # blocks whose expand (conv[0]) output is a skip
LAST_BLOCK = 17  # its output is the deepest feature; features[18] is not built into the encoder
STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """An RGB first-conv kernel ``(out, 3, k, k)`` for ``in_channels`` inputs, as timm and
    segmentation_models_pytorch adapt pretrained weights.

    1 channel: the sum of the R, G and B kernels, so a grey image gives exactly what the RGB model gives for that
    image copied into three channels. N channels: the RGB kernels repeated (R, G, B, R, ...) and scaled by 3/N,
    which keeps the expected activation of the pretrained conv for inputs of similar statistics.

    Example:
        >>> w = torch.ones(32, 3, 3, 3)
        >>> adapt_first_conv(w, 1).shape, float(adapt_first_conv(w, 4).sum(1).mean())
        (torch.Size([32, 1, 3, 3]), 3.0)
    """
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (3.0 / in_channels)


def run_split_block(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a torchvision ``InvertedResidual`` in two halves, returning ``(block output, expand output)``.

    Why a helper: the expand output is needed as a skip, and the residual addition must still use the
    block *input* ``x``, exactly as ``InvertedResidual.forward`` does, or blocks with a residual would silently
    compute something else.
    """
    expanded = block.conv[0](x)
    y = expanded
    for layer in list(block.conv)[1:]:
        y = layer(y)
    out = x + y if block.use_res_connect else y
    return out, expanded


class StridedDepthwiseConv(nn.Conv2d):
    """A stride-2 depthwise conv that trains in fp32 under CPU autocast; otherwise a plain ``nn.Conv2d``.

    Why: oneDNN's bf16 backward of a *strided depthwise* convolution is several times slower than its fp32 one on
    CPUs with bf16 units (the four stride-2 depthwise convs of MobileNetV2 took ~75 ms of a ~370 ms batch-8 training
    step here; in fp32 ~15 ms), while every other convolution is faster in bf16. So when a backward will follow
    (training mode, grad enabled, CPU autocast on), this conv alone computes in fp32: the whole step ran 1.12x
    faster, and these layers only gain precision. Evaluation and exports keep the plain path. Same weights and keys.

    Example:
        >>> conv = StridedDepthwiseConv(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        >>> x = torch.rand(1, 8, 16, 16, requires_grad=True)
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     y = conv(x)
        >>> y.dtype, tuple(y.shape)
        (torch.float32, (1, 8, 8, 8))
    """

    def forward(self, x: Tensor) -> Tensor:
        """fp32 under CPU autocast when training with gradients recorded, else ``nn.Conv2d.forward``."""
        if self.training and x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _use_strided_depthwise(features: nn.Sequential) -> None:
    """Swap each stride-2 depthwise conv of ``features`` for a :class:`StridedDepthwiseConv` (same parameters).

    The new module is built under ``fork_rng``: its throwaway random init must not shift the random stream, so a
    model built under a seed gets the same weights as before the swap existed.
    """
    for parent in list(features.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d and child.groups == child.in_channels > 1 and child.stride != (1, 1):
                with torch.random.fork_rng(devices=[]):
                    new = StridedDepthwiseConv(
                        child.in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        child.groups,
                        bias=child.bias is not None,
                    )
                new.weight = child.weight
                new.bias = child.bias
                setattr(parent, name, new)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 feature extractor returning the tutorial's five skips (strides 2, 4, 8, 16, 32).

    Expects ImageNet-normalised input (the :class:`~mobileseg.models.Segmenter` normalises for you).

    Args:
        width_mult: MobileNetV2 width multiplier; channels scale and round as in torchvision.
        weights: ``'imagenet'`` (torchvision's ImageNet weights, see :func:`load_encoder_weights`), ``'none'`` or
            ``None`` (random init, as torchvision initialises), or a path to a torchvision-layout state dict.
        in_channels: input bands; the first conv of the (pretrained or random) RGB network is adapted to them
            with :func:`adapt_first_conv`.

    Attributes:
        out_channels: channels of the five feature maps, shallow to deep ((96, 144, 192, 576, 320) at x1.0).
        strides: their strides relative to the input.

    Example:
        >>> import torch
        >>> enc = MobileNetV2Encoder(weights=None)
        >>> [tuple(f.shape[1:]) for f in enc(torch.zeros(1, 3, 64, 64))]
        [(96, 32, 32), (144, 16, 16), (192, 8, 8), (576, 4, 4), (320, 2, 2)]
    """

    def __init__(
        self, width_mult: float = 1.0, weights: str | os.PathLike[str] | None = None, in_channels: int = 3
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        self.width_mult = float(width_mult)
        full = mobilenet_v2(weights=None, width_mult=width_mult)
        self.features = full.features[: LAST_BLOCK + 1]  # indices (and so keys) 0..17 as in torchvision
        _use_strided_depthwise(self.features)
        self.out_channels: tuple[int, ...] = tuple(
            [self.features[i].conv[0].out_channels for i in EXPAND_TAPS] + [self.features[LAST_BLOCK].out_channels]
        )
        self.strides = STRIDES
        self._expand_taps = frozenset(EXPAND_TAPS)
        if is_pretrained(weights):
            load_encoder_weights(self, weights)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = int(in_channels)
        if in_channels != 3:
            old = self.features[0][0]
            # fork_rng: the new conv's random init (overwritten below) must not shift the random stream, so a
            # model built under a seed differs from its RGB twin in the first conv only.
            with torch.random.fork_rng(devices=[]):
                conv = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            with torch.no_grad():
                conv.weight.copy_(adapt_first_conv(old.weight, in_channels))
            self.features[0][0] = conv

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return the five feature maps, shallow (stride 2) to deep (stride 32)."""
        feats: list[Tensor] = []
        for i, block in enumerate(self.features):
            if i in self._expand_taps:
                x, expanded = run_split_block(block, x)
                feats.append(expanded)
            else:
                x = block(x)
        feats.append(x)
        return feats


__all__ = [
    "MobileNetV2Encoder",
    "StridedDepthwiseConv",
    "adapt_first_conv",
    "run_split_block",
    "EXPAND_TAPS",
    "STRIDES",
]
