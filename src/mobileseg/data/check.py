"""Dataset check: every problem, with its file names, before any training time is spent.

:func:`check_dataset` decodes each image and mask once (JPEGs at 1/8 scale: the whole compressed stream is still
read, so truncation is caught, at a fraction of the cost), reads mask values with numpy, and gathers the
file-name problems found while listing files. :func:`load_dataset` is what the trainer calls: it raises
:class:`DataError` with the full report when anything is wrong, so a bad mask found in epoch 7 never costs six
epochs of work.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageOps

from mobileseg.config import DataConfig

from .bands import RGB_CHANNELS, read_bands
from .crops import size_advice
from .loading import SWAPPING_ORIENTATIONS, DataError, decode_file, mask_array, reorient_mask
from .resolve import resolve_dataset
from .spec import SPLITS, UNMAPPED, DatasetSpec, Sample, relative, short_list


@dataclass
class DataReport:
    """What :func:`check_dataset` found. ``errors`` and ``warnings`` are sentences naming the file(s)."""

    source: str
    root: Path
    names: list[str]
    ignore_index: int
    split_mode: str
    counts: dict[str, int]
    pairs: int
    image_sizes: tuple[int, int, int, int] | None  # min w, min h, max w, max h (as displayed)
    mask_values: dict[Any, int]  # raw value (palette: (r, g, b) colour) -> pixel count
    value_meaning: dict[Any, str]  # raw value -> class name, 'ignore' or 'UNMAPPED'
    class_pixels: dict[str, int]
    ignored_pixels: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Labelled pixels per class of each split (the same counts, split by split), for labels.png.
    split_class_pixels: dict[str, dict[str, int]] = field(default_factory=dict)
    median_size: tuple[int, int] | None = None  # (w, h) of the median-area image
    advice: list[str] = field(default_factory=list)  # crop / slide settings when images dwarf imgsz

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def class_share(self) -> dict[str, float]:
        """Share of labelled (non-ignored) pixels per class."""
        total = sum(self.class_pixels.values())
        return {k: (v / total if total else 0.0) for k, v in self.class_pixels.items()}

    @property
    def ignored_share(self) -> float:
        total = sum(self.class_pixels.values()) + self.ignored_pixels
        return self.ignored_pixels / total if total else 0.0

    def format(self, max_problems: int = 25) -> str:
        """A human summary followed by every error and warning (up to ``max_problems`` of each)."""
        split = "  ".join(f"{s} {self.counts.get(s, 0)}" for s in SPLITS)
        lines = [
            f"dataset: {self.source}",
            f"root: {self.root}",
            f"classes ({len(self.names)}): {', '.join(self.names)}   ignore_index {self.ignore_index}",
            f"split ({self.split_mode}): {split}   = {self.pairs} pairs",
        ]
        if self.image_sizes:
            a, b, c, d = self.image_sizes
            lines.append(f"image sizes (w x h): {a}..{c} x {b}..{d}")
            if self.median_size:
                lines[-1] += f"   min {a}x{b}, median {self.median_size[0]}x{self.median_size[1]}, max {c}x{d}"
            lines.extend(f"  NOTE: {line}" for line in self.advice)
        total = sum(self.mask_values.values()) or 1
        shown = sorted(self.mask_values.items(), key=lambda kv: kv[0])
        vals = ", ".join(f"{_fmt_value(v)} -> {self.value_meaning[v]} {n / total:.1%}" for v, n in shown[:40])
        more = f", ... (+{len(shown) - 40})" if len(shown) > 40 else ""
        lines.append(f"mask values found ({len(shown)}): {vals}{more}")
        ignored = sum(n for v, n in shown if self.value_meaning[v] == "ignore")
        n_ign = sum(1 for v, _ in shown if self.value_meaning[v] == "ignore")
        n_bad = sum(1 for v, _ in shown if self.value_meaning[v] == "UNMAPPED")
        lines.append(
            f"  mapped to classes: {len(shown) - n_ign - n_bad}, ignored: {n_ign} ({ignored / total:.1%} of pixels)"
            + (f", UNMAPPED: {n_bad}" if n_bad else "")
        )
        share = ", ".join(f"{k} {v:.1%}" for k, v in self.class_share.items())
        lines.append(f"class pixel share: {share}")
        lines.append(f"checked in {self.seconds:.1f} s")
        if self.ok and not self.warnings:
            lines.append("OK: no problems found")
        else:
            lines.append(
                f"{'OK' if self.ok else 'FAILED'}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
            )
        for kind, items in (("ERROR", self.errors), ("WARNING", self.warnings)):
            for msg in items[:max_problems]:
                lines.append(f"  {kind}: {msg}")
            if len(items) > max_problems:
                lines.append(f"  ... and {len(items) - max_problems} more {kind.lower()}s")
        return "\n".join(lines)

    def warning_lines(self, max_problems: int = 25) -> list[str]:
        """The warnings as lines to print where a check passed but something looks wrong (the trainer prints
        them before its first epoch: a check that passes with warnings is otherwise silent).

        Example:
            >>> report.warning_lines()  # doctest: +SKIP
            ['WARNING: binary default (0 = background, any other value = foreground) but masks hold values ...']
        """
        lines = [f"WARNING: {msg}" for msg in self.warnings[:max_problems]]
        if len(self.warnings) > max_problems:
            lines.append(f"... and {len(self.warnings) - max_problems} more warnings")
        return lines

    def __str__(self) -> str:
        return self.format()


def _fmt_value(v: Any) -> str:
    return f"rgb{tuple(v)}" if isinstance(v, tuple) else str(v)


@dataclass
class _Inspected:
    """What one pair contributed: sizes, value counts, problems."""

    sample: Sample
    size: tuple[int, int] | None = None
    counts: dict[Any, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _inspect(spec: DatasetSpec, sample: Sample) -> _Inspected:
    out = _Inspected(sample)
    rel = spec.root
    geometry = None
    try:  # the strict decode of training (JPEGs at 1/8 scale: the whole stream is still read and checked)
        if spec.channels == RGB_CHANNELS:
            geometry = decode_file(sample.image, "image", draft=(1, 1))[1]
        else:  # the band count and bit depth are checked too
            geometry = read_bands(sample.image, spec.channels)[1]
    except DataError as e:
        out.errors.append(str(e).replace(str(sample.image), relative(sample.image, rel)))
    if geometry is not None:
        (w, h), orient = geometry
        out.size = (h, w) if orient in SWAPPING_ORIENTATIONS else (w, h)
    if sample.mask is None:
        return out
    try:
        m = decode_file(sample.mask, "mask")[0]
        arr = mask_array(ImageOps.exif_transpose(m), sample.mask, spec.palette is not None)
    except DataError as e:
        out.errors.append(str(e).replace(str(sample.mask), relative(sample.mask, rel)))
        return out
    arr = reorient_mask(arr, geometry)
    if out.size is not None and (arr.shape[1], arr.shape[0]) != out.size:
        size_problem(spec, sample, out, (arr.shape[1], arr.shape[0]))
    if arr.ndim == 3:
        packed = (arr[..., 0].astype(np.int32) << 16) | (arr[..., 1].astype(np.int32) << 8) | arr[..., 2]
        values, counts = np.unique(packed, return_counts=True)
        out.counts = {
            ((v >> 16) & 255, (v >> 8) & 255, v & 255): int(c)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True)
        }
    elif arr.dtype == np.uint8:
        bc = np.bincount(arr.ravel(), minlength=256)
        nz = np.flatnonzero(bc)
        out.counts = {int(v): int(bc[v]) for v in nz}
    else:
        values, counts = np.unique(arr, return_counts=True)
        out.counts = {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
    return out


def size_problem(spec: DatasetSpec, sample: Sample, out: _Inspected, mask_wh: tuple[int, int]) -> None:
    """A mask of another size than its image: an error, unless ``mask_resize`` says to resize it; then a warning
    only when the aspect ratios differ (the mask would be stretched). The error suggests ``mask_resize: nearest``
    when the aspect ratios agree within 2 % (the mask is most likely a scaled copy)."""
    assert out.size is not None
    (iw, ih), (mw, mh) = out.size, mask_wh
    same_shape = abs((iw / ih) / (mw / mh) - 1) <= 0.02
    mask = relative(sample.mask or sample.image, spec.root)
    what = f"image {relative(sample.image, spec.root)} is {iw}x{ih}, mask {mask} is {mw}x{mh}"
    if spec.mask_resize is None:
        hint = "; the aspect ratios agree, so the mask looks like a scaled copy: add 'mask_resize: nearest' to the "
        hint += "dataset YAML (or mask_resize=nearest) to resize masks to their images"
        out.errors.append(f"size mismatch: {what}" + (hint if same_shape else ""))
    elif not same_shape:
        out.warnings.append(f"mask_resize stretches a mask whose aspect ratio differs from its image's: {what}")


def _meaning(spec: DatasetSpec, value: Any) -> tuple[str, int]:
    """(words, class index or ignore_index or UNMAPPED) for a raw value or palette colour."""
    if isinstance(value, tuple):
        pal = spec.palette or []
        if value not in pal:
            return "UNMAPPED", UNMAPPED
        value = pal.index(value)
    if not 0 <= value < 65536:
        return "UNMAPPED", UNMAPPED
    cls = int(spec.lut()[value])
    return spec.describe_value(value), cls


def check_dataset(spec: DatasetSpec, threads: int = 2, imgsz: tuple[int, int] = (224, 224)) -> DataReport:
    """Check every pair of every split; see :class:`DataReport`.

    Args:
        spec: from :func:`resolve_dataset`.
        threads: decoding threads (PIL releases the GIL); 2 suits small machines without hogging them.
        imgsz: the model input size the size advice compares images with (:func:`~mobileseg.data.crops.size_advice`).
    """
    t0 = time.perf_counter()
    errors = [msg for level, msg in spec.issues if level == "error"]
    warnings = [msg for level, msg in spec.issues if level == "warning"]
    unique: dict[tuple[Path, Path | None], Sample] = {}
    for s in SPLITS:
        for smp in spec.splits.get(s, []):
            unique.setdefault((smp.image, smp.mask), smp)
    samples = list(unique.values())
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda smp: _inspect(spec, smp), samples))

    sizes = [r.size for r in results if r.size is not None]
    totals: dict[Any, int] = {}
    files_with: dict[Any, list[str]] = {}
    for r in results:
        errors.extend(r.errors)
        warnings.extend(r.warnings)
        for v, c in r.counts.items():
            totals[v] = totals.get(v, 0) + c
            if r.sample.mask is not None:
                files_with.setdefault(v, []).append(relative(r.sample.mask, spec.root))
    meaning = {v: _meaning(spec, v) for v in totals}
    class_pixels = {n: 0 for n in spec.names}
    ignored = 0
    for v, c in totals.items():
        words, cls = meaning[v]
        if cls == UNMAPPED:
            what = (
                f"colour {_fmt_value(v)} is not in the palette"
                if isinstance(v, tuple)
                else (f"mask value {v} is not in mask_values")
            )
            errors.append(f"{what} ({c} pixels) in {len(files_with[v])} masks: {short_list(files_with[v])}")
        elif cls == spec.ignore_index:
            ignored += c
        else:
            class_pixels[spec.names[cls]] += c

    if spec.mask_values is None and spec.palette is None and totals:
        found = sorted(v for v in totals if not isinstance(v, tuple))
        if len(found) > 2 or 0 not in found:
            warnings.append(
                f"binary default (0 = background, any other value = foreground) but masks hold values {found[:12]}"
                + (" and no 0 (everything is foreground)" if 0 not in found else "")
                + "; give mask_values in a dataset YAML or use a preset"
            )
    if totals:
        for name, n in class_pixels.items():
            if n == 0:
                how = " (no raw value maps to it: check mask_values)" if spec.mask_values is not None else ""
                warnings.append(f"class '{name}' has no pixels in any mask{how}")

    by_file = {(r.sample.image, r.sample.mask): r.counts for r in results}
    split_class_pixels: dict[str, dict[str, int]] = {}
    for s in SPLITS:
        per_class = {n: 0 for n in spec.names}
        for smp in spec.splits.get(s, []):
            for v, c in by_file[(smp.image, smp.mask)].items():
                cls = meaning[v][1]
                if cls != UNMAPPED and cls != spec.ignore_index:
                    per_class[spec.names[cls]] += c
        if spec.splits.get(s):
            split_class_pixels[s] = per_class
    warnings.extend(train_gaps(spec, class_pixels, split_class_pixels.get("train")))

    report = DataReport(
        source=spec.source,
        root=spec.root,
        names=list(spec.names),
        ignore_index=spec.ignore_index,
        split_mode=str(spec.split_info.get("mode", "?")),
        counts={s: len(spec.splits.get(s, [])) for s in SPLITS},
        pairs=len(samples),
        image_sizes=(
            (min(w for w, _ in sizes), min(h for _, h in sizes), max(w for w, _ in sizes), max(h for _, h in sizes))
            if sizes
            else None
        ),
        mask_values=dict(sorted(totals.items(), key=lambda kv: kv[0])),
        value_meaning={v: m[0] for v, m in meaning.items()},
        class_pixels=class_pixels,
        ignored_pixels=ignored,
        errors=errors,
        warnings=warnings,
        split_class_pixels=split_class_pixels,
        median_size=sorted(sizes, key=lambda s: s[0] * s[1])[len(sizes) // 2] if sizes else None,
        advice=size_advice(sizes, imgsz),
    )
    report.seconds = time.perf_counter() - t0
    return report


def train_gaps(spec: DatasetSpec, class_pixels: dict[str, int], train: dict[str, int] | None) -> list[str]:
    """Warnings for classes with pixels elsewhere but none in the train split: the model never sees them, which
    a mapping (``mask_values``) that sends every value of a class elsewhere, or an unlucky split, causes."""
    if not train:
        return []
    how = "mask_values" if spec.mask_values is not None else "the split"
    return [
        f"class '{name}' has no pixels in the train split ({class_pixels[name]} in val/test): the model cannot learn "
        f"it; check {how}"
        for name, n in train.items()
        if n == 0 and class_pixels.get(name, 0) > 0
    ]


def load_dataset(cfg: DataConfig, check: bool = True, stems: dict[str, list[str]] | None = None) -> DatasetSpec:
    """Resolve the configured dataset and check it; ``stems`` reuses a recorded split exactly.

    Raises:
        DataError: with the whole report text when the check finds errors, before any training work is done.
    """
    spec = resolve_dataset(
        cfg.dataset,
        cfg.preset,
        tuple(cfg.split_ratios),
        cfg.split_seed,
        stems=stems,
        channels=cfg.channels,
        mask_resize=cfg.mask_resize,
    )
    if check:
        report = check_dataset(spec)
        spec.report = report
        if not report.ok:
            raise DataError(f"the dataset check failed:\n{report.format()}")
    return spec
