"""Model rewrites for inference: BatchNorm folded into transposed convolutions, and transposed convolutions as
sub-pixel convolutions (what int8 ONNX Runtime can run). Each returns a modified copy; the math is unchanged.

Example:
    >>> import torch
    >>> from mobileseg.models import Segmenter
    >>> model = Segmenter(num_classes=1).eval()
    >>> x = torch.rand(1, 3, 64, 64)
    >>> bool(torch.allclose(model(x), subpixel_rewrite(fold_batchnorm(model))(x), atol=1e-4))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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


__all__ = ["SubPixelConvTranspose2d", "fold_batchnorm", "subpixel_rewrite"]
