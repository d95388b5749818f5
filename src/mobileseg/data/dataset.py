"""The PyTorch dataset: decode once, resize to model size, cache the uint8 result, augment on the fly.

Decoding a JPEG and resizing it costs far more than a training step's share of a small model on a CPU, so every
sample is decoded and resized exactly once and kept as uint8 at model size:

* ``cache='ram'``: two preallocated numpy arrays (images ``[N, C, H, W]``: uint8 RGB, uint16 for other band
  counts; masks ``[N, H, W]``), filled lazily or up front by :meth:`SegmentationDataset.prefill`. DataLoader
  workers started by ``fork`` after a prefill share those pages copy-on-write (a numpy array is a single object,
  so reading it does not touch its pages); without a prefill each worker process fills its own copy lazily
  (correct, but decodes once per worker).
* ``cache='disk'``: one ``.npy`` per sample (image and mask stacked as ``[C + 1, H, W]`` of the image dtype),
  named by a hash of the files' path, mtime and size, the model size and the mask mapping, so an edited file or a
  new mapping is never served stale. Files are written to a temporary name and renamed, so a crash or two
  processes writing the same sample never leave a torn file.
* ``cache='auto'``: RAM when the whole split fits in a quarter of the available memory, else disk.
* ``cache='none'``: decode every time (for datasets that change while training, or tests).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .bands import RGB_CHANNELS, read_bands, resize_bands, unit, widen
from .loading import DataError, open_image_geometry, read_mask, resize_nearest
from .spec import DatasetSpec, Sample

CACHE_MODES = ("ram", "disk", "none", "auto")
CACHE_VERSION = 1  # bump when decoding changes, so old disk caches are not reused
Geometry = tuple[tuple[int, int], int]


def available_memory() -> int:
    """Bytes of memory this process can still use: MemAvailable, capped by a cgroup (container) limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 4 << 30  # unknown platform: assume a modest machine
    try:  # cgroup v2: a container's limit is invisible in /proc/meminfo
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def resolve_cache(cache: str, n: int, imgsz: tuple[int, int], pixel_bytes: int = 4) -> str:
    """'auto' -> 'ram' if ``n`` samples at ``imgsz`` (``pixel_bytes`` a pixel: 3 + 1 for RGB) fit in a quarter of
    free memory."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if cache != "auto":
        return cache
    need = n * pixel_bytes * imgsz[0] * imgsz[1]
    return "ram" if need <= available_memory() // 4 else "disk"


def default_cache_dir() -> Path:
    """``$MOBILESEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/mobileseg``, else ``~/.cache/mobileseg``.

    Not next to the data: dataset folders are often read-only or shared between users.
    """
    env = os.environ.get("MOBILESEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mobileseg"


def recommended_workers(cache: str) -> int:
    """DataLoader workers chosen for this machine's cores and the cache mode.

    With a RAM (or 'auto') cache a sample costs a memory copy plus a few milliseconds of augmentation, so on
    <= 2 cores worker processes only steal a core from the training step (torch uses every core for its
    convolutions) and add inter-process copies: 0 workers (load in the main process) is faster there. With a
    disk cache the ``.npy`` reads are cheap too, so the same holds. Without a cache every epoch decodes JPEGs,
    which is worth overlapping with compute even on 2 cores (1 worker). On bigger machines, half the cores
    (up to 8) feed a GPU without starving the main process.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    cached = cache in ("ram", "disk", "auto")
    if cores <= 2:
        return 0 if cached else 1
    if cores <= 4:
        return 1 if cached else 2
    return min(8, cores // 2) if not cached else min(4, cores // 2)


def decode_image(spec: DatasetSpec, sample: Sample, imgsz: tuple[int, int]) -> tuple[np.ndarray, Geometry]:
    """One image at model size, ``[C, H, W]`` (bilinear, antialiased): uint8 RGB for ``spec.channels == 3``, else
    uint16 with the file's bands (:mod:`mobileseg.data.bands`); plus its ``(stored (w, h), orientation)``."""
    h, w = imgsz
    if spec.channels != RGB_CHANNELS:
        bands, geometry = read_bands(sample.image, spec.channels)
        return np.ascontiguousarray(widen(resize_bands(bands, (h, w))).transpose(2, 0, 1)), geometry
    image, geometry = open_image_geometry(sample.image, draft=(w, h))
    img = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR) if image.size != (w, h) else image)
    return np.ascontiguousarray(img.transpose(2, 0, 1)), geometry


def decode_sample(spec: DatasetSpec, sample: Sample, imgsz: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair at model size: image ``[C, H, W]`` (:func:`decode_image`), mask ``[H, W]`` uint8 class
    indices (nearest on raw values, then the lookup table).

    Raises:
        DataError: naming the file for unreadable files, a size mismatch (unless ``spec.mask_resize``) or
            unmapped mask values.
    """
    h, w = imgsz
    img, geometry = decode_image(spec, sample, imgsz)
    full = (geometry[0][1], geometry[0][0]) if geometry[1] in (5, 6, 7, 8) else geometry[0]
    if sample.mask is None:
        return img, np.full((h, w), spec.ignore_index, np.uint8)
    raw = read_mask(sample.mask, palette=spec.palette is not None, geometry=geometry)
    if (raw.shape[1], raw.shape[0]) != full and spec.mask_resize is None:
        raise DataError(
            f"size mismatch: image {sample.image} is {full[0]}x{full[1]} but mask {sample.mask} is "
            f"{raw.shape[1]}x{raw.shape[0]}"
        )
    try:
        mask = spec.encode_mask(resize_nearest(raw, (h, w)))
    except DataError as e:
        raise DataError(f"mask {sample.mask}: {e}") from None
    return img, mask


def cached_pixel_bytes(channels: int) -> int:
    """Bytes one cached pixel takes: the image (uint8 RGB, uint16 for other band counts) plus the uint8 mask."""
    return (channels if channels == RGB_CHANNELS else 2 * channels) + 1


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A decoded image ``[C, H, W]`` as a tensor the transforms take: uint8 as is (a copy), uint16 (other band
    counts) as float32 in [0, 1], which torchvision's transforms handle where they would not handle uint16."""
    if image.dtype == np.uint16:
        return torch.from_numpy(image.astype(np.float32) / 65535.0)
    return torch.from_numpy(np.array(image))


class SegmentationDataset(Dataset):
    """Image/mask pairs of one split at model size.

    ``load(i)`` gives the cached uint8 pair (what augmentation works on); ``dataset[i]`` gives what the model
    eats: float32 image ``[C, H, W]`` in [0, 1] (not normalised: the model normalises, so exported models take
    plain pixels) and an int64 mask ``[H, W]`` of class indices with ``ignore_index`` where unlabelled.

    Args:
        spec: the resolved dataset.
        split: 'train', 'val' or 'test'.
        imgsz: (H, W) model input size.
        transform: optional ``(uint8 image, uint8 mask) -> (image, mask)`` (see :func:`build_transforms`).
        cache: 'ram', 'disk', 'none' or 'auto' (see the module docstring).
        cache_dir: root of the disk cache (default :func:`default_cache_dir`).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        imgsz: tuple[int, int],
        transform: Callable | None = None,
        cache: str = "ram",
        cache_dir: Path | None = None,
    ) -> None:
        if split not in spec.splits:
            raise DataError(f"{spec.source}: no split '{split}' (have: {', '.join(spec.splits)})")
        self.spec = spec
        self.split = split
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.transform = transform
        self.samples: list[Sample] = list(spec.splits[split])
        self.channels = int(spec.channels)
        # The cached image dtype: uint8 RGB as always; other band counts as uint16 (8-bit files widened).
        self.dtype = np.dtype(np.uint8 if self.channels == RGB_CHANNELS else np.uint16)
        self.cache = resolve_cache(cache, len(self.samples), self.imgsz, cached_pixel_bytes(self.channels))
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._filled: np.ndarray | None = None
        self._keys: dict[int, Path] = {}
        self._lock = threading.Lock()
        if self.cache == "disk":
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            tag = hashlib.sha1(str(spec.root).encode()).hexdigest()[:8]
            self.cache_dir = root / "samples" / f"{spec.root.name}-{tag}" / f"{self.imgsz[0]}x{self.imgsz[1]}"
        else:
            self.cache_dir = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None  # locks do not pickle (spawned DataLoader workers); recreated below
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- caching

    def _disk_path(self, i: int) -> Path:
        key = self._keys.get(i)
        if key is None:
            s = self.samples[i]
            parts = [str(CACHE_VERSION), f"{self.imgsz[0]}x{self.imgsz[1]}", self.spec.mapping_key()]
            for p in (s.image, s.mask):
                if p is None:
                    parts.append("none")
                else:
                    st = os.stat(p)
                    parts.append(f"{Path(p).resolve()}|{st.st_mtime_ns}|{st.st_size}")
            digest = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:20]
            assert self.cache_dir is not None
            key = self.cache_dir / f"{s.stem[:60]}-{digest}.npy"
            self._keys[i] = key
        return key

    def _from_disk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path = self._disk_path(i)
        h, w = self.imgsz
        c = self.channels
        try:  # image and mask stacked: [C + 1, H, W] of the image dtype
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (c + 1, h, w) and arr.dtype == self.dtype:
                return arr[:c], arr[c].astype(np.uint8)
        except (OSError, ValueError, EOFError):
            pass  # missing or unreadable: decode and rewrite
        img, mask = decode_sample(self.spec, self.samples[i], self.imgsz)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.concatenate([img, mask[None].astype(self.dtype)], axis=0))
            os.replace(tmp, path)  # atomic: readers see the old state or the whole file
        except OSError:  # a full or read-only disk costs speed, not the run
            tmp.unlink(missing_ok=True)
        return img, mask

    def _from_ram(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            with self._lock:
                if self._images is None:
                    n, (h, w) = len(self.samples), self.imgsz
                    # np.empty commits no memory until a page is written, so unfilled samples cost nothing.
                    self._masks = np.empty((n, h, w), np.uint8)
                    self._filled = np.zeros(n, bool)
                    self._images = np.empty((n, self.channels, h, w), self.dtype)
        assert self._images is not None and self._masks is not None and self._filled is not None
        if not self._filled[i]:
            img, mask = decode_sample(self.spec, self.samples[i], self.imgsz)
            self._images[i], self._masks[i] = img, mask
            self._filled[i] = True  # set after the data: a concurrent reader never sees a half-written sample
        return self._images[i], self._masks[i]

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache == "ram":
            return self._from_ram(i)
        if self.cache == "disk":
            return self._from_disk(i)
        return decode_sample(self.spec, self.samples[i], self.imgsz)

    def prefill(self, threads: int = 2) -> int:
        """Decode every not-yet-cached sample now, with a small thread pool (PIL releases the GIL while
        decoding). Call before creating DataLoader workers so they inherit the filled RAM cache.

        Returns:
            the number of samples decoded (0 when everything was cached, or with ``cache='none'``).
        """
        if self.cache == "none":
            return 0
        if self.cache == "ram":
            todo = [i for i in range(len(self)) if self._filled is None or not self._filled[i]]
        else:
            todo = [i for i in range(len(self)) if not self._disk_path(i).is_file()]
        if not todo:
            return 0
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(self._arrays, todo))
        return len(todo)

    # ---------------------------------------------------------------------------------------------- access

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached pair: image ``[C, H, W]`` (uint8 RGB, or float32 in [0, 1] for other band counts, which
        torchvision's transforms handle where they would not handle uint16) and uint8 mask ``[H, W]`` (copies:
        safe to modify). :func:`mobileseg.data.bands.unit` turns either image into [0, 1]."""
        img, mask = self._arrays(i)
        return image_tensor(img), torch.from_numpy(np.array(mask))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_np, mask_np = self._arrays(i)
        # Views of the cache: the transform and the dtype conversions below allocate new tensors, never write.
        if img_np.dtype == np.uint16:
            img = torch.from_numpy(img_np.astype(np.float32) / 65535.0)
        else:
            img = torch.from_numpy(img_np)
        mask = torch.from_numpy(mask_np)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return unit(img), mask.long()

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.spec.source!r}, split={self.split!r}, n={len(self)}, "
            f"imgsz={self.imgsz}, cache={self.cache!r})"
        )
