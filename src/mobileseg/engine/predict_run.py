"""``mobileseg predict`` on files: which images a ``source`` names, and writing each image's results.

Each image's files are written as soon as it is predicted and ``predictions.csv`` row by row, so a crash or
Ctrl-C keeps what was done. An unreadable image is reported and skipped (listed in ``PredictRun.skipped``; the
command line then exits with status 1); only a source whose every image is unreadable is an error.
"""

from __future__ import annotations

import csv
import glob
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mobileseg.data import DataError, to_rgb
from mobileseg.errors import MissingFileError

from .predictor import PredictionResult, Predictor, warn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LIST_SUFFIXES = (".txt",)


def resolve_source(source: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image paths named by ``source``: a file, a folder (its images, sorted), a glob, or a ``.txt`` list file.

    Entries of a list file that do not exist are returned as ``(entry, reason)`` so they are reported, not fatal.
    Relative entries in a list file are read relative to the list file's folder (then to the working directory).

    Raises:
        MissingFileError: ``source`` matches nothing.
    """
    if isinstance(source, Sequence) and not isinstance(source, str):
        files, missing = [], []
        for item in source:
            f, m = resolve_source(item) if Path(item).is_dir() else _one_file(Path(item))
            files += f
            missing += m
        return files, missing
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), []
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        files, missing = [], []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"source list {path} is not UTF-8 text ({e})") from None
        for line in text.splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            candidate = Path(entry).expanduser()
            if not candidate.is_absolute() and (path.parent / candidate).exists():
                candidate = path.parent / candidate  # a list travels with its images, wherever it is run from
            f, m = _one_file(candidate)
            files += f
            missing += [(entry, reason) for _, reason in m]
        return files, missing
    if path.is_file():
        return [path], []
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        return [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES], []
    raise MissingFileError(f"source not found: {text} (expected an image, a folder, a glob or a .txt list)")


def _nested_hint(source: str | Path | Sequence[str | Path]) -> str:
    """For a folder whose images sit in subfolders only (a folder is read one level deep, as a dataset's images/
    folder is): the recursive glob that reaches them."""
    if not isinstance(source, str | Path) or not Path(source).expanduser().is_dir():
        return ""
    nested = (p for p in Path(source).expanduser().rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if next(nested, None) is None:
        return ""
    return f"; its subfolders hold images, which source='{Path(source) / '**' / '*'}' reads (a recursive glob)"


def _one_file(path: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    return ([path], []) if path.is_file() else ([], [(str(path), "file not found")])


def _batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class PredictRun:
    """What ``predict`` did: one :class:`PredictionResult` per image, the output folder and the skipped inputs.

    Iterating over it, ``len()`` and indexing go to ``results``.
    """

    results: list[PredictionResult]
    save_dir: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __iter__(self) -> Iterator[PredictionResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> PredictionResult:
        return self.results[i]


class _Writer:
    """Writes each image's files as soon as it is predicted, and predictions.csv row by row (a crash keeps them)."""

    def __init__(self, predictor: Predictor, save_dir: Path, save_probs: bool) -> None:
        self.predictor, self.save_dir, self.save_probs = predictor, save_dir, save_probs
        self.used: set[str] = set()
        info = predictor.info
        self.share_keys = [info.names[1]] if info.binary else list(info.names)
        share_cols = ["foreground_share"] if info.binary else [f"share_{n}" for n in info.names]
        self.csv_file = open(save_dir / "predictions.csv", "w", newline="")  # noqa: SIM115 (closed in close())
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["file", "width", "height", *share_cols, "seconds"])

    def _stem(self, path: Path) -> str:
        # Two inputs with the same stem (a.jpg, a.png, or a folder glob) must not overwrite each other's outputs.
        stem, n = path.stem, 2
        while stem in self.used:
            stem, n = f"{path.stem}_{n}", n + 1
        self.used.add(stem)
        return stem

    def write(self, result: PredictionResult, image: Image.Image | np.ndarray) -> None:
        stem = self._stem(Path(result.path or "image"))
        self.predictor.mask_image(result.mask).save(self.save_dir / f"{stem}_mask.png")
        self.predictor.overlay_image(image, result.mask).save(self.save_dir / f"{stem}_overlay.jpg", quality=90)
        if self.save_probs:
            np.save(self.save_dir / f"{stem}_probs.npy", result.probs.astype(np.float16))
        shares = [f"{result.shares[k]:.6f}" for k in self.share_keys]
        self.csv.writerow([result.path, result.width, result.height, *shares, f"{result.seconds:.4f}"])
        self.csv_file.flush()

    def close(self) -> None:
        self.csv_file.close()


def predict_files(
    predictor: Predictor,
    source: str | Path | Sequence[str | Path],
    save_dir: Path,
    batch: int = 8,
    save_probs: bool = False,
    verbose: bool = True,
) -> PredictRun:
    """Segment every image ``source`` names, in batches of ``batch``, writing results into ``save_dir``.

    In resize mode a batch's images (all resized to the model's input size) run in one forward pass; in slide
    mode each image slides on its own, ``batch`` windows at a time. The next batch is decoded in a thread while
    the model runs (:func:`_decoded_ahead`). In fp32 the masks are those of predicting the images one by one
    (an image's forward pass does not depend on its batch neighbours; only float rounding, ~1e-7, does, as the
    conv kernels sum in a batch-dependent order: tests/test_predict.py checks it).

    Output: ``<stem>_mask.png`` (binary: 0/255; multi-class: class indices with the palette),
    ``<stem>_overlay.jpg``, ``<stem>_probs.npy`` (float16, with ``save_probs``) and ``predictions.csv`` (file,
    width, height, class pixel shares, seconds).

    Raises:
        MissingFileError: ``source`` names no image.
        DataError: every image it names is unreadable (some unreadable ones are skipped, as warnings).
    """
    from tqdm import tqdm

    log = print if verbose else (lambda *a, **k: None)
    files, skipped = resolve_source(source)
    for entry, reason in skipped:
        warn(f"skipped {entry}: {reason}")
    if not files:
        raise MissingFileError(
            f"no images found in {source} (looked for {', '.join(IMAGE_SUFFIXES)}){_nested_hint(source)}"
        )
    save_dir.mkdir(parents=True, exist_ok=True)
    log(
        f"predict: {len(files)} images with {predictor.weights.name} (input {predictor.imgsz[0]}x"
        f"{predictor.imgsz[1]}, {predictor.describe()}), batches of {batch}"
    )
    writer = _Writer(predictor, save_dir, save_probs)
    results: list[PredictionResult] = []
    start = time.perf_counter()
    progress = tqdm(total=len(files), desc="  predict", leave=False, disable=None if verbose else True)
    try:
        for chunk, (images, paths, decode) in _decoded_ahead(files, batch, skipped, predictor.read):
            for result, image in zip(predictor.predict_batch(images, paths, decode), images, strict=True):
                writer.write(result, image)
                results.append(result)
            progress.update(len(chunk))
    finally:
        progress.close()
        writer.close()
    seconds = time.perf_counter() - start
    rate = len(results) / seconds if seconds > 0 else math.nan
    lines = "\n".join(f"  {entry}: {reason}" for entry, reason in skipped)
    if not results:  # a run that wrote nothing must not end like one that worked (exit status 0 in scripts)
        raise DataError(f"none of the {len(files)} image(s) in {source} could be read:\n{lines}")
    log(f"{len(results)} images predicted in {seconds:.1f} s ({rate:.1f} images/s)")
    if skipped:
        warn(f"{len(skipped)} input(s) skipped:\n{lines}")
    log(f"Results saved to {save_dir}")
    return PredictRun(results, save_dir, skipped, seconds)


def _decoded_ahead(
    files: Sequence[Path], batch: int, skipped: list[tuple[str, str]], read: Callable[[Path], Any]
) -> Iterator[tuple[Sequence[Path], tuple[list[Any], list[str], list[float]]]]:
    """``(chunk, _decode(chunk))`` for each batch of ``files``, the next batch decoded in a thread meanwhile.

    Why: decoding (PIL, tifffile) releases the GIL, so on a machine with a spare core the next batch's JPEGs
    are ready when the model has finished the current one; at most two batches of decoded images are held.
    Results and their order are those of decoding in the loop (``skipped`` is appended in file order too).
    """
    chunks = list(_batched(files, batch))
    if not chunks:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mobileseg-decode") as pool:
        pending = pool.submit(_decode, chunks[0], skipped, read)
        for i, chunk in enumerate(chunks):
            decoded = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(_decode, chunks[i + 1], skipped, read)
            yield chunk, decoded


def _decode(
    chunk: Sequence[Path], skipped: list[tuple[str, str]], read: Callable[[Path], Any] = to_rgb
) -> tuple[list[Any], list[str], list[float]]:
    """Decode a batch's files with ``read`` (the predictor's: RGB, or the model's bands); an unreadable one is
    reported in ``skipped``, never fatal for the batch."""
    images, paths, decode = [], [], []
    for path in chunk:
        t = time.perf_counter()
        try:
            images.append(read(path))
        except (DataError, OSError, ValueError, SyntaxError) as e:
            reason = str(e).split("\n")[0] or type(e).__name__
            warn(f"skipped {path}: {reason}")
            skipped.append((str(path), reason))
            continue
        paths.append(str(path))
        decode.append(time.perf_counter() - t)
    return images, paths, decode


__all__ = ["IMAGE_SUFFIXES", "PredictRun", "predict_files", "resolve_source"]
