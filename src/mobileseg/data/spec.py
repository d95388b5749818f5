"""What a dataset is: pairs of image/mask files, class names, the raw-value mapping, and the splits.

:class:`DatasetSpec` is the resolved form (built by :func:`mobileseg.data.resolve_dataset`, see ``resolve.py``);
this module also validates the class part of a dataset YAML (``names``, ``mask_values``, ``ignore_index``,
``palette``) against itself, since that is what decides how a raw mask value becomes a class index.

Dataset YAML (every key optional)::

    path: .                      # data root; relative paths resolve against this YAML's folder
    preset: oxford_pets          # start from a bundled preset, then override keys below
    names: [background, pet]     # or {0: background, 1: pet}
    mask_values: {1: 1, 2: 0, 3: pet, 255: ignore}   # raw value -> class index, class name or ignore
                                 # '*': 3 (or '*': ignore) = every raw value not listed
    mask_resize: nearest         # masks that are scaled copies of their images: resized (default: an error)
    ignore_index: 255
    palette: [[0, 0, 0], [128, 0, 0]]                 # RGB masks: colour i is raw value i
    splits:                      # list files (one stem a line), relative to the root
      train: [splits/a.txt, splits/b.txt]
      val: splits/val.txt
      test: splits/test.txt
    val_fraction: 0.15           # seeded share of train moved to val when no val list/folder exists;
                                 # 0 = none: a final fit on every train image (best.pt = final epoch)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .loading import DataError

SPLITS = ("train", "val", "test")
BINARY_NAMES = ["background", "foreground"]
UNMAPPED = -1  # LUT sentinel for raw values the mapping does not mention
ANY_VALUE = -1  # mask_values key of the '*' entry: every raw value the mapping does not list
MASK_RESIZE = ("nearest",)  # values of ``mask_resize`` (None: a mask of another size than its image is an error)


@dataclass
class Sample:
    """One image and its mask (``None`` for an unlabelled image)."""

    stem: str
    image: Path
    mask: Path | None


@dataclass
class DatasetSpec:
    """A resolved dataset: files per split plus everything needed to turn a raw mask into class indices."""

    root: Path
    names: list[str]
    ignore_index: int
    mask_values: dict[int, int | None] | None  # raw value -> class index or None (ignore); None = binary default
    palette: list[tuple[int, int, int]] | None
    splits: dict[str, list[Sample]]
    split_info: dict[str, Any]
    source: str
    # (level, message) found while listing files: 'error' or 'warning'; check_dataset reports them.
    issues: list[tuple[str, str]] = field(default_factory=list)
    # Summary from check_dataset when the spec came through load_dataset (warnings for the trainer to print).
    report: Any = None
    # Display colours, one per class (YAML ``colors``), for figures and overlays only; ``palette`` decodes masks.
    colors: list[tuple[int, int, int]] | None = None
    # Bands of the model input (config ``channels``): 3 reads every image as RGB, anything else keeps the file's
    # bands and bit depth (mobileseg.data.bands).
    channels: int = 3
    # 'nearest': a mask whose size differs from its image's is resized to it (scaled copies); None: an error.
    mask_resize: str | None = None
    _lut: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def warning_lines(self) -> list[str]:
        """Warnings to print before training: the dataset check's (``report``, set by :func:`load_dataset`), else
        those found while listing files.

        Example:
            >>> for line in load_dataset(cfg.data).warning_lines():  # doctest: +SKIP
            ...     print(line)
        """
        if self.report is not None:
            return list(self.report.warning_lines())
        return [f"WARNING: {msg}" for level, msg in self.issues if level == "warning"]

    def mapping_key(self) -> str:
        """A stable text of everything that changes encoded masks (part of the disk-cache key)."""
        mv = None if self.mask_values is None else sorted(self.mask_values.items())
        key: dict[str, Any] = {"mv": mv, "palette": self.palette, "ignore": self.ignore_index}
        if self.channels != 3:  # only when not the default, so RGB caches written before stay valid
            key["channels"] = self.channels
        if self.mask_resize:
            key["mask_resize"] = self.mask_resize
        return json.dumps(key)

    def lut(self) -> np.ndarray:
        """Raw value (0..65535) -> class index / ignore_index, or UNMAPPED; int16 for the sentinel."""
        if self._lut is None:
            lut = np.full(65536, UNMAPPED, dtype=np.int16)
            if self.mask_values is None:
                if self.palette is not None:  # palette index i is class i (checked: no more colours than names)
                    lut[: len(self.palette)] = np.arange(len(self.palette))
                else:  # binary default: 0 background, anything else foreground
                    lut[:] = 1
                    lut[0] = 0
            else:
                if ANY_VALUE in self.mask_values:  # '*': the default of every value not listed
                    default = self.mask_values[ANY_VALUE]
                    lut[:] = self.ignore_index if default is None else default
                for raw, cls in self.mask_values.items():
                    if raw != ANY_VALUE:
                        lut[raw] = self.ignore_index if cls is None else cls
            self._lut = lut
        return self._lut

    def describe_value(self, raw: int) -> str:
        """What a raw mask value becomes, in words ('pet', 'ignore', 'UNMAPPED')."""
        v = int(self.lut()[raw]) if 0 <= raw < 65536 else UNMAPPED
        if v == UNMAPPED:
            return "UNMAPPED"
        if v == self.ignore_index:
            return "ignore"
        return self.names[v]

    def palette_indices(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 colours -> HxW palette indices; unmatched colours raise DataError listing them."""
        packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        colours, inverse = np.unique(packed, return_inverse=True)
        table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(self.palette or [])}
        idx = np.array([table.get(int(c), -1) for c in colours], dtype=np.int32)
        if (idx < 0).any():
            bad = [_rgb(int(c)) for c in colours[idx < 0]]
            raise DataError(f"mask colours not in the palette: {', '.join(map(str, bad[:10]))}")
        return idx[inverse.reshape(packed.shape)]

    def encode_mask(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask (HxW values, or HxWx3 colours with a palette) -> HxW uint8 class indices / ignore_index.

        Raises:
            DataError: listing raw values (or colours) that the mapping does not cover, so a wrong mapping is
                never silently trained on.
        """
        if raw.ndim == 3:
            if self.palette is None:
                raise DataError("colour (HxWx3) mask given but the dataset has no palette")
            raw = self.palette_indices(raw)
        lut = self.lut()
        if raw.dtype == np.uint8:
            out = lut[:256][raw]
        else:
            if raw.size and (raw.min() < 0 or raw.max() > 65535):
                raise DataError("mask values outside 0..65535")
            out = lut[raw.astype(np.int64)]
        if (out == UNMAPPED).any():
            bad = np.unique(raw[out == UNMAPPED])
            raise DataError(f"mask values not in mask_values: {', '.join(map(str, bad[:20].tolist()))}")
        return out.astype(np.uint8)


def _rgb(packed: int) -> tuple[int, int, int]:
    return ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root when it is inside it (shorter messages), else as given."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def short_list(items: list[str], limit: int = 10) -> str:
    """The first ``limit`` items joined, with a count of the rest: a message never lists 10,000 files."""
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# --------------------------------------------------------------------------------------------- class mapping


def _parse_names(raw: Any, where: str) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in raw.items())
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class indices 0..n-1") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise DataError(f"{where}: 'names' indices must be 0..{len(items) - 1} without gaps")
        return [v for _, v in items]
    if isinstance(raw, list) and raw:
        return [str(v) for v in raw]
    raise DataError(f"{where}: 'names' must be a list or a {{index: name}} mapping")


def _parse_mapping(raw: Any, names: list[str] | None, ignore_index: int, where: str) -> dict[int, int | None] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: 'mask_values' must map raw mask values to a class index or 'ignore'")
    out: dict[int, int | None] = {}
    for k, v in raw.items():
        try:
            key = ANY_VALUE if str(k).strip() == "*" else int(k)
        except (TypeError, ValueError):
            raise DataError(f"{where}: mask value '{k}' is not an integer (or '*' for every other value)") from None
        if key != ANY_VALUE and not 0 <= key <= 65535:
            raise DataError(f"{where}: mask value {key} is outside 0..65535")
        if v is None or (isinstance(v, str) and v.lower() == "ignore") or v == ignore_index:
            out[key] = None
        elif isinstance(v, bool):
            raise DataError(f"{where}: mask value {key} -> {v!r} is not a class")
        elif isinstance(v, int):
            out[key] = v
        elif isinstance(v, str) and names and v in names:
            out[key] = names.index(v)
        else:
            shown = "'*'" if key == ANY_VALUE else key
            raise DataError(f"{where}: mask value {shown} -> {v!r} is not a class index, class name or 'ignore'")
    return out


def _parse_palette(raw: Any, where: str, key: str = "palette") -> list[tuple[int, int, int]] | None:
    if raw is None:
        return None
    try:
        pal = [tuple(int(c) for c in entry) for entry in raw]
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' must be a list of [r, g, b]") from None
    if not pal or any(len(c) != 3 or not all(0 <= x <= 255 for x in c) for c in pal):
        raise DataError(f"{where}: '{key}' must be a list of [r, g, b] with values 0..255")
    if len(set(pal)) != len(pal):
        raise DataError(f"{where}: '{key}' repeats a colour")
    return pal  # type: ignore[return-value]


def parse_colors(raw: Any, names: list[str], where: str) -> list[tuple[int, int, int]] | None:
    """Display colours (YAML ``colors``): exactly one [r, g, b] per class; never used to decode masks."""
    colors = _parse_palette(raw, where, "colors")
    if colors is not None and len(colors) != len(names):
        raise DataError(f"{where}: 'colors' has {len(colors)} colours for {len(names)} classes (give one per class)")
    return colors


def parse_classes(
    doc: dict[str, Any], where: str
) -> tuple[list[str], int, dict[int, int | None] | None, list[tuple[int, int, int]] | None]:
    """names, ignore_index, mask_values, palette from a YAML doc, validated against each other.

    Raises:
        DataError: naming ``where`` (the YAML or preset) and the key that is wrong.
    """
    names = _parse_names(doc.get("names"), where)
    ignore_index = doc.get("ignore_index", 255)
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise DataError(f"{where}: 'ignore_index' must be an integer 0..255")
    mapping = _parse_mapping(doc.get("mask_values"), names, ignore_index, where)
    palette = _parse_palette(doc.get("palette"), where)
    if names is None:
        if mapping is not None:
            top = max((c for c in mapping.values() if c is not None), default=1)
            names = [f"class{i}" for i in range(top + 1)]
        elif palette is not None:
            names = [f"class{i}" for i in range(len(palette))]
        else:
            names = list(BINARY_NAMES)
    if len(names) < 2:
        raise DataError(f"{where}: at least 2 classes are needed (got {names})")
    if len(names) > 255 or ignore_index < len(names):
        raise DataError(
            f"{where}: ignore_index {ignore_index} collides with class indices 0..{len(names) - 1}; "
            "use a value above the last class (e.g. 255)"
        )
    if mapping is not None:
        bad = sorted({c for c in mapping.values() if c is not None and not 0 <= c < len(names)})
        if bad:
            raise DataError(f"{where}: mask_values map to class indices {bad} but there are {len(names)} names")
    elif palette is not None and len(palette) > len(names):
        raise DataError(
            f"{where}: palette has {len(palette)} colours for {len(names)} classes; map the extra colours "
            "(palette index = raw value) with mask_values, e.g. {" + f"{len(names)}: ignore" + "}"
        )
    return names, ignore_index, mapping, palette
