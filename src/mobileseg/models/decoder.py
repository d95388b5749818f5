"""The pix2pix decoder of the TensorFlow "Image segmentation" tutorial.

Four ``upsample`` blocks (transposed conv x2, BatchNorm, optional Dropout, ReLU) with 512, 256, 128 and 64
filters. After each, the encoder skip of the same resolution is concatenated (deepest first). A last stride-2
transposed conv maps to ``num_classes`` logits at the input resolution. The tutorial uses Keras'
``padding='same'``, i.e. the output is exactly twice the input; for kernel ``k`` that is
``padding=(k-1)//2`` and ``output_padding=2+2*padding-k`` in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

PIX2PIX_FILTERS: tuple[int, ...] = (512, 256, 128, 64)
INIT_STD = 0.02  # pix2pix: weights ~ N(0, 0.02)


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on its gradient in the forward tensor's memory format (NHWC here)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


def cat_channels(tensors: Sequence[Tensor], dense_grad: bool = True) -> Tensor:
    """``torch.cat(tensors, dim=1)`` whose backward gives each input a dense gradient (with ``dense_grad``).

    Why: the backward of a channel concatenation hands each input a channel *slice* of the output's gradient,
    which is strided in NHWC. The ReLU, BatchNorm, bilinear-upsampling and convolution backwards that receive it
    then take slow strided paths on the CPU (a ReLU6 backward measured 10-20x slower than on a dense gradient);
    one copy into the dense layout first made the bf16 training step 1.18x faster. The values are untouched. The
    decoders pass ``dense_grad=self.training``: evaluation and exports (traced in eval mode) get the plain cat.

    Example:
        >>> a, b = torch.ones(1, 2, 4, 4, requires_grad=True), torch.ones(1, 3, 4, 4, requires_grad=True)
        >>> cat_channels([a, b]).sum().backward()
        >>> a.grad.is_contiguous(), float(b.grad.sum())
        (True, 48.0)
    """
    if not (dense_grad and torch.is_grad_enabled()) or torch.jit.is_tracing():
        return torch.cat(list(tensors), dim=1)
    return torch.cat([_DenseGrad.apply(t) if t.requires_grad else t for t in tensors], dim=1)


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
            x = cat_channels([block(x), skip], self.training)
        return self.head(x)


REFINE_FILTERS: tuple[int, ...] = (256, 128, 64, 32)
REFINE_SKIP_FILTERS: tuple[int | None, ...] = (64, 48, 32, 24, None)  # the skips' 1x1 projections, deepest first


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv (no bias: the BatchNorm after it would cancel one) -> BatchNorm -> ReLU, 'same' size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class RefineBlock(nn.Module):
    """One pix2pix decoder stage with the upsampling made uniform and a refinement after the skip.

    Bilinear x2 upsampling, concatenation with the encoder skip of that resolution (first narrowed by a 1x1
    conv, as DeepLabV3+ does: MobileNetV2's skips are its wide expansion layers, 96-576 channels, and a 3x3 conv
    over them would cost more than the whole encoder), then two 3x3 conv + BN + ReLU.

    Why not the tutorial's transposed conv: a stride-2 transposed conv with kernel 3 gives even output rows two
    kernel taps and odd rows one, and its last row and column one tap where the rows above get two; that is the
    dotted grid and the comb of holes along the bottom and right edges of the tutorial decoder's masks.
    Upsampling by interpolation then convolving (Odena et al., "Deconvolution and checkerboard artifacts", 2016)
    treats every pixel and every border alike. The convolutions *after* the concatenation are what let the stage
    combine the coarse context with the skip's detail (smp's U-Net decoder does the same); the tutorial has none.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the encoder skip concatenated after the upsampling.
        out_channels: filters of both refinement convs.
        skip_out: channels the skip is projected to before the concatenation; None concatenates it as it is
            (the full-resolution stage's skip, the normalised image: a ReLU would cut its negative half).

    Example:
        >>> RefineBlock(320, 576, 256, 64)(torch.zeros(1, 320, 7, 7), torch.zeros(1, 576, 14, 14)).shape
        torch.Size([1, 256, 14, 14])
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, skip_out: int | None) -> None:
        super().__init__()
        self.skip = nn.Identity() if skip_out is None else conv_bn_relu(skip_channels, skip_out, kernel_size=1)
        self.conv1 = conv_bn_relu(in_channels + (skip_channels if skip_out is None else skip_out), out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` to the skip's size, concatenate, refine."""
        x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv2(self.conv1(cat_channels([x, self.skip(skip)], self.training)))


class ImagePooling(nn.Module):
    """DeepLabV3's image-level feature: the deepest map's global average, a 1x1 conv + ReLU, concatenated everywhere.

    Why: each pixel of the 1/32 map sees only its receptive field; the pooled vector tells every pixel what the
    whole image holds (is there a pet, is this a street). The 1x1 conv has a bias and no BatchNorm: at batch 4 a
    BatchNorm over four pooled vectors would be noise. The broadcast is an addition to zeros, not ``expand`` with
    the map's size, so traced exports stay free of shape arithmetic.

    Example:
        >>> ImagePooling(320, 64)(torch.ones(2, 320, 7, 9)).shape
        torch.Size([2, 384, 7, 9])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        pooled = torch.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return cat_channels([x, pooled + torch.zeros_like(x[:, :1])], self.training)


class RefineDecoder(nn.Module):
    """The pix2pix decoder's shape (upsample, concatenate the skip, deepest first) with refinement convs.

    The default decoder (``decoder='refine'``). Four :class:`RefineBlock` stages with 256, 128, 64 and 32 filters
    bring the deepest feature (1/32) to 1/2 of the input; a 3x3 conv head maps that to logits, which are
    upsampled bilinearly to the input size (a head at full resolution cost 10 % more training time for the same
    logits' smoothness). Narrower filters than the tutorial's 512-64 and the skips' 1x1 projections keep the cost
    close to the tutorial's although every stage now has two convolutions (see the README's decoder table).

    A fifth filter count adds a **full-resolution stage** (smp's U-Net has one too): it upsamples to the input
    size, concatenates the normalised image itself as its skip (the only full-resolution detail there is: a
    1-3 px pole is half a pixel wide at 1/2 resolution) and refines with two 3x3 convs before a full-resolution
    head. Its forward then takes the image as ``features[0]``, before the encoder's five maps.

    Args:
        encoder_channels: channels of the encoder features, shallow to deep (5 values; the last is the input).
        num_classes: output channels (1 = binary logits).
        filters: filters of the stages, deepest first; one per skip (4), or 5 with the full-resolution stage.
        skip_filters: channels each skip is projected to (1x1 conv), deepest first; None = not projected.
        input_channels: channels of the image, the full-resolution stage's skip.
        context: channels of an :class:`ImagePooling` branch on the deepest feature; 0 = none (the default).

    Example:
        >>> dec = RefineDecoder((96, 144, 192, 576, 320), num_classes=3)
        >>> feats = [torch.zeros(1, c, 64 // s, 64 // s) for c, s in zip(dec.encoder_channels, (2, 4, 8, 16, 32))]
        >>> dec(feats).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int = 1,
        filters: Sequence[int] = REFINE_FILTERS,
        skip_filters: Sequence[int | None] = REFINE_SKIP_FILTERS,
        input_channels: int = 3,
        context: int = 0,
    ) -> None:
        super().__init__()
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        if int(context) != context or context < 0:
            raise ValueError(f"decoder_context must be a channel count >= 0 (0 = no context branch), got {context}")
        self.context = ImagePooling(self.encoder_channels[-1], int(context)) if context else nn.Identity()
        self.full_resolution = len(filters) == len(self.encoder_channels)
        if len(filters) not in (len(self.encoder_channels) - 1, len(self.encoder_channels)):
            raise ValueError(
                f"need one filter count per skip (plus one for a full-resolution stage): "
                f"{len(self.encoder_channels)} encoder features, {len(filters)} filters"
            )
        skips = self.encoder_channels[-2::-1]  # deepest skip first
        if self.full_resolution:
            skips = (*skips, int(input_channels))
        blocks = []
        in_ch = self.encoder_channels[-1] + int(context)
        for out_ch, skip_ch, skip_out in zip(filters, skips, skip_filters[: len(filters)], strict=True):
            blocks.append(RefineBlock(in_ch, skip_ch, out_ch, skip_out))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_ch, num_classes, 3, padding=1)
        self.num_classes = num_classes
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init for the ReLU convs; the head starts small (N(0, 0.01), zero bias; a binary training run then sets
        the bias to the train prior, :meth:`init_prior`) so first logits are ~0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def init_prior(self, foreground_share: float) -> None:
        """Start a binary head at the train foreground's log-odds (the prior init of RetinaNet, Lin et al. 2017).

        Why: with a zero bias every pixel starts at p = 0.5, and on a rare foreground the first steps' gradient
        says "background" at nearly every pixel. Measured on Dubai road-vs-rest (8.5 % road) with plain BCE, that
        push collapsed this decoder to background everywhere for good (train recall 0 from epoch 2, two seeds);
        started at the prior, the same runs learned road from epoch 4. The tutorial decoder keeps its own init.

        Args:
            foreground_share: the foreground's share of the labelled train pixels, clipped to [1e-4, 1 - 1e-4].

        Example:
            >>> dec = RefineDecoder((96, 144, 192, 576, 320), num_classes=1)
            >>> dec.init_prior(0.1)
            >>> round(float(torch.sigmoid(dec.head.bias)), 3)
            0.1
        """
        if self.num_classes != 1:
            raise ValueError(f"init_prior is for a binary head (1 logit), this one has {self.num_classes}")
        p = min(max(float(foreground_share), 1e-4), 1 - 1e-4)
        with torch.no_grad():
            self.head.bias.fill_(math.log(p / (1 - p)))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode encoder features (shallow to deep) into logits at twice the shallowest feature's size.

        With the full-resolution stage, ``features[0]`` is the normalised image and the logits come at its size.
        """
        x = self.context(features[-1])
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = block(x, skip)
        if self.full_resolution:
            return self.head(x)
        h, w = features[0].shape[-2:]
        return nn.functional.interpolate(self.head(x), size=(2 * h, 2 * w), mode="bilinear", align_corners=False)


DECODERS = ("refine", "tutorial")


def default_channels(name: str) -> tuple[int, ...]:
    """The stage filters a decoder gets when ``decoder_channels`` is not set (deepest first)."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder '{name}': choose one of {', '.join(DECODERS)}")
    return REFINE_FILTERS if name == "refine" else PIX2PIX_FILTERS


def build_decoder(
    name: str,
    encoder_channels: Sequence[int],
    num_classes: int,
    kernel_size: int = 3,
    dropout: float = 0.0,
    channels: Sequence[int] | None = None,
    input_channels: int = 3,
    context: int = 0,
) -> nn.Module:
    """The decoder named by the ``decoder`` setting: ``'refine'`` (default) or ``'tutorial'`` (the TF tutorial's).

    ``kernel_size`` and ``dropout`` shape the tutorial's transposed-conv blocks; the refine decoder has neither.
    ``channels``: the filters of the four stages, deepest first (``decoder_channels``; smp's name); None = the
    decoder's own default (:func:`default_channels`). The refine decoder takes a fifth value for a
    full-resolution stage whose skip is the image (``input_channels`` channels). ``context``: channels of the
    refine decoder's image-pooling branch (``decoder_context``; 0 = none).

    Example:
        >>> type(build_decoder("tutorial", (96, 144, 192, 576, 320), 1)).__name__
        'Pix2PixDecoder'
    """
    filters = tuple(channels) if channels is not None else default_channels(name)
    counts = (4, 5) if name == "refine" else (4,)
    if len(filters) not in counts or any(int(f) != f or f < 1 for f in filters):
        what = "4 positive integers (or 5: a full-resolution stage last)" if name == "refine" else "4 positive integers"
        raise ValueError(f"decoder_channels of '{name}' must be {what}, deepest stage first; got {list(filters)}")
    if name == "refine":
        return RefineDecoder(encoder_channels, num_classes, filters, input_channels=input_channels, context=context)
    if context:
        raise ValueError(f"decoder_context needs decoder=refine (the tutorial has no context branch), got {context}")
    return Pix2PixDecoder(encoder_channels, num_classes, filters=filters, kernel_size=kernel_size, dropout=dropout)
