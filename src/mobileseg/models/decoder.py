"""The pix2pix decoder of the TensorFlow "Image segmentation" tutorial.

Four ``upsample`` blocks (transposed conv x2, BatchNorm, optional Dropout, ReLU) with 512, 256, 128 and 64
filters. After each, the encoder skip of the same resolution is concatenated (deepest first). A last stride-2
transposed conv maps to ``num_classes`` logits at the input resolution. The tutorial uses Keras'
``padding='same'``, i.e. the output is exactly twice the input; for kernel ``k`` that is
``padding=(k-1)//2`` and ``output_padding=2+2*padding-k`` in PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

PIX2PIX_FILTERS: tuple[int, ...] = (512, 256, 128, 64)
INIT_STD = 0.02  # pix2pix: weights ~ N(0, 0.02)


def same_padding_transpose(kernel_size: int) -> tuple[int, int]:
    """``(padding, output_padding)`` making a stride-2 ``ConvTranspose2d`` double the size, like Keras 'same'."""
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    padding = (kernel_size - 1) // 2
    return padding, 2 + 2 * padding - kernel_size


class UpsampleBlock(nn.Sequential):
    """pix2pix ``upsample``: ConvTranspose2d(stride 2, no bias) -> BatchNorm -> [Dropout] -> ReLU.

    The conv has no bias because the BatchNorm that follows would cancel it.

    Args:
        in_channels: input channels.
        out_channels: filters of the transposed conv.
        kernel_size: transposed-conv kernel (3 in the tutorial).
        dropout: dropout probability; 0 leaves the layer out (pix2pix uses 0.5 in its generator).

    Example:
        >>> UpsampleBlock(320, 512)(torch.zeros(1, 320, 7, 7)).shape
        torch.Size([1, 512, 14, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dropout: float = 0.0) -> None:
        padding, output_padding = same_padding_transpose(kernel_size)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=2,
                padding=padding,
                output_padding=output_padding,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Pix2PixDecoder(nn.Module):
    """Upsamples the deepest encoder feature back to the input size, concatenating skips on the way.

    Args:
        encoder_channels: channels of the encoder features, shallow to deep (5 values; the last is the input).
        num_classes: output channels (1 = binary logits).
        filters: filters of the upsample blocks, deepest first; one per skip.
        kernel_size: kernel of every transposed conv (3 in the tutorial).
        dropout: dropout in the upsample blocks.

    Example:
        >>> dec = Pix2PixDecoder((96, 144, 192, 576, 320), num_classes=1)
        >>> feats = [torch.zeros(1, c, 64 // s, 64 // s) for c, s in zip(dec.encoder_channels, (2, 4, 8, 16, 32))]
        >>> dec(feats).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int = 1,
        filters: Sequence[int] = PIX2PIX_FILTERS,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        if len(self.encoder_channels) != len(filters) + 1:
            raise ValueError(
                f"need one filter count per skip: {len(self.encoder_channels)} encoder features, {len(filters)} filters"
            )
        skips = self.encoder_channels[-2::-1]  # deepest skip first
        blocks = []
        in_ch = self.encoder_channels[-1]
        for out_ch, skip_ch in zip(filters, skips, strict=True):
            blocks.append(UpsampleBlock(in_ch, out_ch, kernel_size, dropout))
            in_ch = out_ch + skip_ch
        self.blocks = nn.ModuleList(blocks)
        padding, output_padding = same_padding_transpose(kernel_size)
        self.head = nn.ConvTranspose2d(
            in_ch, num_classes, kernel_size, stride=2, padding=padding, output_padding=output_padding
        )
        self.num_classes = num_classes
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """pix2pix init: transposed convs ~ N(0, 0.02) with zero bias; BatchNorm weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode encoder features (shallow to deep) into logits at twice the shallowest feature's size."""
        x = features[-1]
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = torch.cat([block(x), skip], dim=1)
        return self.head(x)
