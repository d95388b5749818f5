"""The segmentation model: ImageNet normalisation + MobileNetV2 encoder + pix2pix decoder.

The model owns its input normalisation (as persistent buffers), so training, prediction and exported files
all take plain RGB in [0, 1] and cannot disagree about mean/std. A checkpoint stores the constructor
arguments next to the weights, so :meth:`Segmenter.from_checkpoint` rebuilds the exact model from the file
alone.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from mobileseg.config import STRIDE  # the encoder's output stride: input sides must be multiples of it
from mobileseg.errors import WeightsError

from .checkpoint import load_checkpoint, make_checkpoint
from .decoder import build_decoder, default_channels
from .encoder import MobileNetV2Encoder
from .hub import load_pretrained, save_pretrained

if TYPE_CHECKING:
    from mobileseg.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMGSZ = (224, 224)
# The constructor arguments the config's ``model`` section sets, by the same names (see from_config).
CONFIG_ARGS = (
    "width_mult",
    "encoder_weights",
    "kernel_size",
    "decoder_dropout",
    "freeze_encoder",
    "freeze_bn",
    "decoder",
    "decoder_channels",
    "decoder_context",
)
# What a checkpoint without a ``decoder`` entry was made with: every file written before the refine decoder.
LEGACY_DECODER = "tutorial"
# The refine decoder's stage filters in files written before ``decoder_channels`` existed.
LEGACY_REFINE_CHANNELS = (256, 128, 64, 32)


def default_stats(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation before the train split's own statistics are set: ImageNet's for RGB, their average for one
    channel, cycled like the first conv's kernels (:func:`~mobileseg.models.encoder.adapt_first_conv`) for N."""
    if in_channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    return (
        tuple(IMAGENET_MEAN[i % 3] for i in range(in_channels)),
        tuple(IMAGENET_STD[i % 3] for i in range(in_channels)),
    )


def set_normalization(model: Segmenter, mean: Sequence[float], std: Sequence[float]) -> None:
    """Store per-channel input statistics in the model's ``mean``/``std`` buffers (so checkpoints and exports
    carry them); one value per input channel.

    Raises:
        ValueError: when the counts do not match ``model.in_channels``.
    """
    if len(mean) != model.in_channels or len(std) != model.in_channels:
        raise ValueError(f"{len(mean)} means / {len(std)} stds for a model of {model.in_channels} input channels")
    with torch.no_grad():
        model.mean.copy_(torch.tensor(mean, dtype=model.mean.dtype).view(1, -1, 1, 1))
        model.std.copy_(torch.tensor(std, dtype=model.std.dtype).view(1, -1, 1, 1))


def _size_hint(h: int, w: int) -> str:
    """Nearest valid sizes around ``h x w``, to put in the error message."""

    def down(v: int) -> int:
        return max(STRIDE, v // STRIDE * STRIDE)

    def up(v: int) -> int:
        return max(STRIDE, -(-v // STRIDE) * STRIDE)

    def nearest(v: int) -> int:
        return max(STRIDE, round(v / STRIDE) * STRIDE)

    return f"nearest valid size {nearest(h)}x{nearest(w)} (round down {down(h)}x{down(w)}, up {up(h)}x{up(w)})"


def _as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = (int(v) for v in imgsz)
    return h, w


class Segmenter(nn.Module):
    """MobileNetV2 + pix2pix segmentation network (the TensorFlow tutorial's model) taking RGB in [0, 1].

    Input sides must be multiples of 32 (anything else raises ``ValueError`` naming the nearest valid sizes;
    ``predict`` resizes for you). Output: logits ``(N, num_classes, H, W)`` at the input resolution; for
    ``num_classes == 1`` a single binary (foreground) logit map.

    Args:
        num_classes: output channels; 1 means binary segmentation.
        width_mult: MobileNetV2 width multiplier.
        encoder_weights: ``'imagenet'``, ``'none'``/``None`` or a path to a torchvision MobileNetV2 state dict.
        kernel_size: kernel of the tutorial decoder's transposed convs (3 as in the tutorial).
        decoder_dropout: dropout probability in the tutorial decoder's upsample blocks.
        freeze_encoder: start with the encoder's parameters frozen (the tutorial trains the decoder only).
        freeze_bn: keep the encoder's BatchNorm layers in eval mode during training (fixed running stats;
            their affine parameters still train unless the encoder is frozen). Keras' ``trainable=False``, as
            in the tutorial, does both, so use ``freeze_encoder=True, freeze_bn=True`` to match it.
        decoder: ``'refine'`` (default: bilinear upsampling and two 3x3 convs after each skip, see
            :class:`~mobileseg.models.decoder.RefineDecoder`) or ``'tutorial'`` (the TF tutorial's transposed
            convs, :class:`~mobileseg.models.decoder.Pix2PixDecoder`).
        in_channels: input bands (3 = RGB). Other counts adapt the first conv's (pretrained) RGB kernels
            (:func:`~mobileseg.models.encoder.adapt_first_conv`) and take their ``mean``/``std`` from the train
            split (:func:`set_normalization`); checkpoints without this entry are RGB models.
        decoder_channels: filters of the decoder's four stages, deepest first (smp's ``decoder_channels``);
            a fifth adds the refine decoder's full-resolution stage; None = the decoder's default. Stored
            resolved, so checkpoints rebuild with the widths they were trained with; refine checkpoints without
            this entry have (256, 128, 64, 32).
        decoder_context: channels of the refine decoder's image-pooling branch on the deepest feature
            (:class:`~mobileseg.models.decoder.ImagePooling`); 0 = none, as in every file without the entry.

    Attributes:
        num_classes: output channels. binary: ``num_classes == 1``.
        init_args: the constructor arguments, so a checkpoint can rebuild the model (see ``to_checkpoint``).
        encoder: :class:`MobileNetV2Encoder`. decoder: :class:`RefineDecoder` or :class:`Pix2PixDecoder`.
        names: class names (set from a checkpoint) or None. imgsz: the (H, W) it was trained at, default 224x224.

    Example:
        >>> model = Segmenter(num_classes=1, encoder_weights=None).eval()
        >>> model(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 1, 224, 224])
    """

    def __init__(
        self,
        num_classes: int = 1,
        width_mult: float = 1.0,
        encoder_weights: str | os.PathLike[str] | None = None,
        kernel_size: int = 3,
        decoder_dropout: float = 0.0,
        freeze_encoder: bool = False,
        freeze_bn: bool = False,
        decoder: str = "refine",
        in_channels: int = 3,
        decoder_channels: Sequence[int] | None = None,
        decoder_context: int = 0,
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer (1 = binary), got {num_classes}")
        if not 0 <= decoder_dropout < 1:
            raise ValueError(f"decoder_dropout must be in [0, 1), got {decoder_dropout}")
        self.init_args: dict[str, Any] = {
            "num_classes": int(num_classes),
            "width_mult": float(width_mult),
            "encoder_weights": None if encoder_weights is None else str(encoder_weights),
            "kernel_size": int(kernel_size),
            "decoder_dropout": float(decoder_dropout),
            "freeze_encoder": bool(freeze_encoder),
            "freeze_bn": bool(freeze_bn),
            "decoder": str(decoder),
            "in_channels": int(in_channels),
            # resolved, so a later change of the default never changes what a checkpoint rebuilds
            "decoder_channels": [int(c) for c in (decoder_channels or default_channels(str(decoder)))],
            "decoder_context": int(decoder_context),
        }
        self.num_classes = int(num_classes)
        self.binary = self.num_classes == 1
        self.freeze_bn = bool(freeze_bn)
        self.freeze_encoder = False
        self.names: list[str] | None = None
        self.imgsz: tuple[int, int] = DEFAULT_IMGSZ
        self.in_channels = int(in_channels)
        mean, std = default_stats(self.in_channels)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=True)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=True)
        self.encoder = MobileNetV2Encoder(width_mult=width_mult, weights=encoder_weights, in_channels=in_channels)
        self.decoder = build_decoder(
            decoder,
            self.encoder.out_channels,
            self.num_classes,
            kernel_size=kernel_size,
            dropout=decoder_dropout,
            channels=self.init_args["decoder_channels"],
            input_channels=self.in_channels,
            context=self.init_args["decoder_context"],
        )
        self.set_encoder_frozen(freeze_encoder)
        self.train(self.training)  # apply freeze_bn from the start
        # NHWC ("channels_last") weights and activations: on the CPU, PyTorch's NCHW ConvTranspose2d falls back
        # to a slow path that made a training step ~10x slower than NHWC (1.1 vs 13 img/s at batch 8, 224 px).
        # The layout changes no result; load_state_dict and .to(device) keep it.
        self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------------- forward
    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(N, in_channels, H, W)`` with H and W multiples of 32."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            what = "an RGB batch" if self.in_channels == 3 else f"a batch of {self.in_channels}-channel images"
            raise ValueError(f"expected {what} of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % STRIDE or w % STRIDE or h == 0 or w == 0:
            raise ValueError(
                f"input size {h}x{w} (HxW) is not a multiple of {STRIDE} on both sides (MobileNetV2 downsamples "
                f"by {STRIDE}); {_size_hint(h, w)}. Resize or pad the image (predict does this for you)."
            )

    def encode(self, x: Tensor) -> list[Tensor]:
        """Normalise RGB in [0, 1] and return the encoder's five feature maps (strides 2..32).

        A decoder with a full-resolution stage also gets the normalised image, first (its skip).
        """
        # Under tracing/export, shapes may be symbolic; the check is for eager users and would only add guards.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
            x = x.contiguous(memory_format=torch.channels_last)
        x = (x - self.mean) / self.std
        features = self.encoder(x)
        return [x, *features] if getattr(self.decoder, "full_resolution", False) else features

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes, H, W)`` for input ``(N, in_channels, H, W)`` in [0, 1] (RGB by default)."""
        return self.decoder(self.encode(x))

    # ------------------------------------------------------------------------------------------ training aids
    def set_encoder_frozen(self, frozen: bool = True) -> None:
        """Turn ``requires_grad`` off (or back on) for every encoder parameter."""
        self.freeze_encoder = bool(frozen)
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> Segmenter:
        """Set train/eval mode; with ``freeze_bn`` the encoder's BatchNorm layers stay in eval mode."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # --------------------------------------------------------------------------------------------- summary
    def summary(self, imgsz: int | Sequence[int] = DEFAULT_IMGSZ) -> dict[str, Any]:
        """Parameter counts and compute at ``imgsz``.

        Returns a dict with ``params`` (all parameters), ``trainable`` (those with ``requires_grad``),
        ``bn_buffers`` (BatchNorm running mean/var elements; Keras counts these as non-trainable params, so
        ``params + bn_buffers`` is the figure comparable to a Keras ``model.summary()``), ``gflops`` and ``imgsz``.

        GFLOPs convention: ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add of the
        convolutions and matmuls (BatchNorm, activations and additions are not counted), for one image
        (batch 1) at ``imgsz``; i.e. ``gflops = 2 * MACs / 1e9``.
        """
        h, w = _as_hw(imgsz)
        params = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        bn_buffers = sum(
            m.running_mean.numel() + m.running_var.numel()
            for m in self.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        )
        ref = self.mean
        x = torch.zeros(1, self.in_channels, h, w, device=ref.device, dtype=ref.dtype)
        was_training = self.training
        self.eval()  # no running-stat updates, no dropout
        try:
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                self(x)
        finally:
            self.train(was_training)
        return {
            "params": params,
            "trainable": trainable,
            "bn_buffers": bn_buffers,
            "gflops": counter.get_total_flops() / 1e9,
            "imgsz": (h, w),
        }

    def format_summary(self, imgsz: int | Sequence[int] = DEFAULT_IMGSZ) -> str:
        """One line: architecture, classes, parameters and GFLOPs at ``imgsz``."""
        s = self.summary(imgsz)
        h, w = s["imgsz"]
        kind = "binary" if self.binary else f"{self.num_classes} classes"
        return (
            f"Segmenter (MobileNetV2 x{self.init_args['width_mult']:g} + pix2pix {self.init_args['decoder']}, {kind}): "
            f"{s['params'] / 1e6:.2f}M params ({s['trainable'] / 1e6:.2f}M trainable), "
            f"{s['gflops']:.2f} GFLOPs at {h}x{w}"
        )

    # ------------------------------------------------------------------------------------ build and restore
    @classmethod
    def from_config(cls, model_cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> Segmenter:
        """Build from the ``model`` section of a :class:`mobileseg.config.Config` (``in_channels``: the data
        section's ``channels``)."""
        args = {name: getattr(model_cfg, name) for name in CONFIG_ARGS}
        return cls(num_classes=num_classes, in_channels=in_channels, **args)

    def checkpoint_args(self) -> dict[str, Any]:
        """``init_args`` as a checkpoint must store them: ``encoder_weights=None`` so a rebuild loads nothing."""
        return {**self.init_args, "encoder_weights": None}

    def to_checkpoint(
        self, names: Sequence[str] | None = None, imgsz: int | Sequence[int] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A checkpoint dict (the schema of :mod:`mobileseg.models.checkpoint`) that :meth:`from_checkpoint` reads.

        ``extra`` takes ``ignore_index``, ``palette`` and the training entries (optimizer state, epoch, ...).
        """
        names = self.names if names is None else names
        return make_checkpoint(self.state_dict(), self.checkpoint_args(), names, _as_hw(imgsz or self.imgsz), **extra)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str] | Mapping[str, Any], map_location: Any = "cpu", source: str | None = None
    ) -> Segmenter:
        """Rebuild the exact model from a checkpoint file alone (returned in eval mode).

        ``path`` may also be the checkpoint dict itself (loaded once by a caller that needs its other entries;
        ``source`` then names the file in error messages). ``names`` and ``imgsz`` become ``model.names`` /
        ``model.imgsz``. The file is read with ``weights_only``, so a file that would run code is refused.

        Raises:
            WeightsError: the file is unreadable, not a checkpoint, or does not match its own ``model_args``.

        Example:
            >>> ckpt = Segmenter(num_classes=3).to_checkpoint(names=["a", "b", "c"])
            >>> Segmenter.from_checkpoint(ckpt).names
            ['a', 'b', 'c']
        """
        ckpt = load_checkpoint(path, source)
        where = source or ("checkpoint" if isinstance(path, Mapping) else str(path))
        args = dict(ckpt["model_args"])
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise WeightsError(f"{where}: model_args has unknown entries {unknown} (made by a newer mobileseg?)")
        args["encoder_weights"] = None  # the state dict holds every weight; never download or read others
        args.setdefault("decoder", LEGACY_DECODER)  # files from before the refine decoder keep their architecture
        if args["decoder"] == "refine":  # ... and refine files from before decoder_channels keep their widths
            args.setdefault("decoder_channels", LEGACY_REFINE_CHANNELS)
        try:
            model = cls(**args)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{where}: cannot rebuild the model from model_args {args}: {e}") from None
        try:
            model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:400]
            raise WeightsError(f"{where}: weights do not match model_args: {detail}") from None
        model.names = None if ckpt.get("names") is None else [str(n) for n in ckpt["names"]]
        model.imgsz = DEFAULT_IMGSZ if ckpt.get("imgsz") is None else _as_hw(ckpt["imgsz"])
        if isinstance(map_location, str | torch.device):
            model.to(map_location)
        return model.eval()

    # ------------------------------------------------------------------------------------ Hub-style folders
    def save_pretrained(self, directory: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Write ``config.json`` + ``model.safetensors`` + a model card ``README.md`` (see
        :func:`mobileseg.models.hub.save_pretrained` for ``info``, ``metrics``, ``images``).

        Example:
            >>> import tempfile
            >>> model = Segmenter(num_classes=3).eval()
            >>> folder = model.save_pretrained(tempfile.mkdtemp(), info={"names": ["a", "b", "c"]})
            >>> x = torch.rand(1, 3, 64, 64)
            >>> bool(torch.equal(Segmenter.from_pretrained(folder)(x), model(x)))
            True
        """
        return save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        dir_or_repo_id: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        map_location: Any = "cpu",
    ) -> Segmenter:
        """Rebuild the model from a folder written by :meth:`save_pretrained`, or a Hub repo id holding one
        (with ``huggingface_hub`` installed); weights read with safetensors, never pickle. Eval mode.

        Raises:
            WeightsError: anything wrong with the folder, its files or the download, in one line.
        """
        ckpt = load_pretrained(dir_or_repo_id, revision=revision, cache_dir=cache_dir)
        return cls.from_checkpoint(ckpt, map_location=map_location, source=ckpt["source"])
