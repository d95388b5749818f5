"""Full-resolution inference: sliding windows, blending, row-band streaming, multi-scale and flip TTA.

Pure functions on a callable ``fn(batch NCHW float in [0, 1]) -> (N, C, h, w)`` (logits or probabilities: the
windows' outputs are blended as they come), so a ``Segmenter``, an ONNX session with a fixed input size and a
phone runtime all slide the same way. :class:`~mobileseg.engine.predictor.Predictor` (predict, serve) and
:class:`~mobileseg.engine.inference_mode.SlideModel` (val, test, validation during training) call them.

Why windows: a model trained on crops at native resolution sees fine detail that a resize to ``imgsz`` throws
away; predicting the whole image at once would need a graph of arbitrary size (impossible for a fixed-size
export) and memory in proportion. Windows of the training crop, overlapping by ``overlap`` of their size, are
run in batches; each output is weighted by a window that falls off towards its borders (``gaussian`` or
``linear``; a window's border pixels saw the least context) and the sums are divided by the summed weights.
The last window of a row or column is aligned to the image's end, so every window lies inside the image; an
image smaller than the window is padded with zeros (black, what padded training crops contain) and the output
cropped back.

Memory bound: windows are processed in row bands (all windows with the same top row). After a band, every row
above the next band's top is final: :func:`slide_bands` yields it and forgets it, so at most one window's height
of float32 rows is ever held. :func:`slide_classes` turns each finished band into a uint8 class map at once, so a
100-megapixel image costs its uint8 pixels plus one band, never ``C x H x W`` float32 values.

Example:
    >>> net = torch.nn.Conv2d(3, 2, 3, padding=1)
    >>> probs = slide_probs(lambda x: net(x).softmax(1), torch.rand(3, 100, 130), (64, 64))
    >>> tuple(probs.shape)
    (2, 100, 130)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mobileseg.data.bands import resize_bands, unit_tensor

WindowFn = Callable[[torch.Tensor], torch.Tensor]  # float (N, 3, h, w) in [0, 1] -> (N, C, h, w)
Blend = Literal["gaussian", "linear", "mean"]
BLENDS = ("gaussian", "linear", "mean")
STREAM_PIXELS = 16_000_000  # above this many pixels (at slide resolution) predict streams row bands to uint8


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top (or left) edges of the windows along one side: every ``stride``, the last aligned to the end.

    Example:
        >>> window_starts(100, 64, 48), window_starts(50, 64, 48)
        ([0, 36], [0])
    """
    if size <= window:
        return [0]
    starts = list(range(0, size - window, max(1, stride)))
    return [*starts, size - window]


def stride_for(window: int, overlap: float) -> int:
    """Step between windows for an ``overlap`` fraction (0 = windows touch)."""
    return max(1, int(round(window * (1 - overlap))))


def blend_weights(window: tuple[int, int], mode: str = "gaussian") -> torch.Tensor:
    """Per-pixel weight (h, w) of one window's output, > 0 everywhere, highest in the centre.

    ``gaussian``: sigma = a quarter of the side (border weight e^-2 = 0.14 of the centre); ``linear``: a tent
    falling to 1 / (half the side) at the border; ``mean``: uniform (plain averaging).
    """
    if mode not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {mode!r}")

    def side(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        if mode == "gaussian":
            return torch.exp(-((i - (n - 1) / 2) ** 2) / (2 * (n / 4) ** 2))
        if mode == "linear":
            return torch.minimum(i + 1, n - i) / math.ceil(n / 2)
        return torch.ones(n, dtype=torch.float64)

    return (side(window[0])[:, None] * side(window[1])[None, :]).float()


def _window(image: torch.Tensor, y: int, x: int, window: tuple[int, int]) -> torch.Tensor:
    """One float window (3, h, w) in [0, 1], zero-padded on the bottom/right where the image is smaller."""
    h, w = window
    crop = image[:, y : y + h, x : x + w]
    crop = crop.float().div(255) if crop.dtype == torch.uint8 else crop.float()
    if crop.shape[1] < h or crop.shape[2] < w:
        crop = F.pad(crop, (0, w - crop.shape[2], 0, h - crop.shape[1]))
    return crop


def slide_bands(
    fn: WindowFn,
    image: torch.Tensor,
    window: tuple[int, int],
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int = 4,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended outputs of ``image`` (3, H, W), uint8 or float in [0, 1], as finished row bands.

    Yields ``(first row, (C, rows, W) float32)`` top to bottom; the bands tile rows 0..H exactly. Only the rows
    some later window still covers are kept between bands.

    Args:
        fn: the network (see the module docstring); called with at most ``batch`` windows at a time.
        window: (h, w) input size of ``fn``.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        blend: ``gaussian``, ``linear`` or ``mean`` (see :func:`blend_weights`).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    _, height, width = image.shape
    wh, ww = window
    ph, pw = max(height, wh), max(width, ww)  # padded extent: an image smaller than the window is padded
    ys = window_starts(ph, wh, stride_for(wh, overlap))
    xs = window_starts(pw, ww, stride_for(ww, overlap))
    weight = blend_weights(window, blend)
    acc: torch.Tensor | None = None  # (C, wh, pw): rows ys[k] .. ys[k] + wh of the band being built
    wsum = torch.zeros(wh, pw)
    for k, y in enumerate(ys):
        for i in range(0, len(xs), max(1, batch)):
            chunk = xs[i : i + batch]
            out = fn(torch.stack([_window(image, y, x, window) for x in chunk])).float().cpu()
            if acc is None:
                acc = torch.zeros(out.shape[1], wh, pw)
            for j, x in enumerate(chunk):
                acc[:, :, x : x + ww] += out[j] * weight
                wsum[:, x : x + ww] += weight
        assert acc is not None
        done = (ys[k + 1] - y) if k + 1 < len(ys) else wh  # rows no later window touches
        rows = min(done, height - y)
        if rows > 0:
            yield y, acc[:, :rows, :width] / wsum[:rows, :width]
        acc = torch.cat([acc[:, done:], torch.zeros(acc.shape[0], done, pw)], 1)
        wsum = torch.cat([wsum[done:], torch.zeros(done, pw)], 0)


def slide_probs(
    fn: WindowFn,
    image: torch.Tensor,
    window: tuple[int, int],
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int = 4,
) -> torch.Tensor:
    """The whole blended output (C, H, W) of ``image`` (see :func:`slide_bands` for the arguments)."""
    return torch.cat([band for _, band in slide_bands(fn, image, window, overlap, blend, batch)], 1)


def slide_classes(
    fn: WindowFn,
    image: torch.Tensor,
    window: tuple[int, int],
    to_classes: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int = 4,
) -> np.ndarray:
    """A uint8 class map (H, W) of ``image``, each band converted by ``to_classes`` ((C, r, W) -> (r, W)) as soon
    as it is final: the memory-bound path for very large images."""
    out = np.empty(image.shape[1:], np.uint8)
    for y, band in slide_bands(fn, image, window, overlap, blend, batch):
        out[y : y + band.shape[1]] = to_classes(band).to(torch.uint8).numpy()
    return out


def flip_average(fn: WindowFn) -> WindowFn:
    """``fn`` averaged with its run on the horizontally flipped input (flipped back): flip test-time augmentation."""

    def flipped(x: torch.Tensor) -> torch.Tensor:
        out = fn(torch.cat([x, x.flip(-1)])).float()
        n = x.shape[0]
        return (out[:n] + out[n:].flip(-1)) / 2

    return flipped


def scaled_size(size: Sequence[int], scale: float | None, multiple: int = 1) -> tuple[int, int]:
    """``size`` (H, W) times ``scale``, rounded (to a multiple of ``multiple``, at least one of it)."""
    s = 1.0 if scale is None else float(scale)
    return tuple(max(multiple, int(round(v * s / multiple)) * multiple) for v in size[:2])  # type: ignore[return-value]


def resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) image bilinearly, same dtype: uint8 RGB with PIL (the resampling decode and predict
    use, no float copy); other band counts (uint8) and float images in [0, 1] antialiased like PIL
    (:func:`mobileseg.data.bands.resize_bands`), so grey and multi-band models slide at ``train_scale`` too."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    if image.dtype == torch.uint8 and image.shape[0] == 3:
        pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
        resized = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        return torch.from_numpy(resized.copy()).permute(2, 0, 1)
    if image.dtype == torch.uint8:
        bands = resize_bands(image.permute(1, 2, 0).numpy(), size)
        return torch.from_numpy(np.ascontiguousarray(bands.transpose(2, 0, 1)))
    x = image.float()[None]
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]


def chw_pixels(image: Image.Image | np.ndarray) -> torch.Tensor:
    """An image as :meth:`~mobileseg.engine.predictor.Predictor.read` returns it (RGB PIL, or HxWxC uint8/uint16
    bands) -> (C, H, W) for :func:`slide_image`: uint8 as a read-only view of the decoded pixels (windows copy
    from it), uint16 as float32 in [0, 1] (divided by 65535, as training scales it)."""
    arr = np.asarray(image) if isinstance(image, Image.Image) else image
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        return unit_tensor(arr)
    with warnings.catch_warnings():  # PIL's buffer is read-only: a view, no copy; nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr).permute(2, 0, 1)


def nearest_resize(array: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Nearest-neighbour resize of the last two axes (pixel-centre convention, as PIL), any dtype; labels stay
    labels, and no float copy of a uint8 map is made."""
    h, w = array.shape[-2:]
    if (h, w) == tuple(size):
        return array
    rows = np.minimum(((np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.int64), w - 1)
    if isinstance(array, torch.Tensor):
        return array[..., torch.from_numpy(rows)[:, None], torch.from_numpy(cols)[None, :]]
    return array[..., rows[:, None], cols[None, :]]


def slide_image(
    fn: WindowFn,
    image: torch.Tensor,
    window: tuple[int, int],
    *,
    overlap: float = 0.25,
    blend: str = "gaussian",
    batch: int = 4,
    train_scale: float | None = None,
    scales: Sequence[float] = (1.0,),
    to_classes: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stream_pixels: int = STREAM_PIXELS,
) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """Slide over one image (C, H, W), uint8 or float in [0, 1], the way training saw it; outputs at its size.

    The image is scaled by ``train_scale`` (the scale training cropped at), slid over, and the result brought
    back to (H, W) by nearest neighbour. With several ``scales`` (multi-scale TTA) the slide runs at each
    ``train_scale * s`` and the outputs, resized bilinearly to the ``train_scale`` size, are averaged.

    Returns:
        ``(probabilities (C, H, W), None)``; or, when ``to_classes`` is given and the scaled image has more than
        ``stream_pixels`` pixels, ``(None, uint8 class map (H, W))`` from the streaming path (multi-scale is then
        skipped: it would need every scale's full output at once).
    """
    size = tuple(image.shape[1:])
    base = scaled_size(size, train_scale)
    if to_classes is not None and base[0] * base[1] > stream_pixels:
        classes = slide_classes(fn, resize_uint8(image, base), window, to_classes, overlap, blend, batch)
        return None, nearest_resize(classes, size)  # type: ignore[return-value]
    total: torch.Tensor | None = None
    for s in scales:
        at = scaled_size(base, s)
        out = slide_probs(fn, resize_uint8(image, at), window, overlap, blend, batch)
        if at != base:
            out = F.interpolate(out[None], size=base, mode="bilinear", align_corners=False)[0]
        total = out if total is None else total + out
    assert total is not None
    return nearest_resize(total / len(scales), size), None  # type: ignore[return-value]


def resize_tta(fn: WindowFn, batch: torch.Tensor, scales: Sequence[float] = (1.0,), multiple: int = 32) -> torch.Tensor:
    """Multi-scale TTA of the resize mode: ``fn`` on ``batch`` (N, 3, h, w) resized by each scale (sides rounded
    to ``multiple``), outputs resized back bilinearly to (h, w) and averaged.

    Scales that round to the same size (0.75 and 1.25 of 64 px both give 64 at a multiple of 32) run once and
    count as often as they were given, so the average is the same for less work; a warning says so, since the
    multi-scale part then does less than the scales suggest (or nothing, at small sizes)."""
    size = tuple(batch.shape[-2:])
    sizes: dict[tuple[int, int], int] = {}
    for s in scales:
        at = scaled_size(size, s, multiple)
        sizes[at] = sizes.get(at, 0) + 1
    if len(sizes) < len(scales):
        shown = ", ".join(f"{h}x{w}" for h, w in sizes)
        warnings.warn(
            f"tta_scales {', '.join(f'{s:g}' for s in scales)} give {len(sizes)} distinct input size(s) at "
            f"{size[0]}x{size[1]} ({shown}; sides are rounded to multiples of {multiple}): each runs once",
            stacklevel=2,
        )
    total: torch.Tensor | None = None
    for at, count in sizes.items():
        x = batch if at == size else F.interpolate(batch, size=at, mode="bilinear", align_corners=False)
        out = fn(x).float()
        if at != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        out = out * count if count > 1 else out
        total = out if total is None else total + out
    assert total is not None
    return total / len(scales)


__all__ = [
    "BLENDS",
    "STREAM_PIXELS",
    "Blend",
    "WindowFn",
    "blend_weights",
    "chw_pixels",
    "flip_average",
    "nearest_resize",
    "resize_tta",
    "resize_uint8",
    "scaled_size",
    "slide_bands",
    "slide_classes",
    "slide_image",
    "slide_probs",
    "stride_for",
    "window_starts",
]
