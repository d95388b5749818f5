"""What a dataset is: pairs of image/mask files, class names, the raw-value mapping, and the splits.

``resolve_dataset`` turns what the user typed (a dataset YAML, a folder, a preset name, or nothing) into a
:class:`DatasetSpec`. It only lists files; nothing is decoded here, so it is instant even on large folders.
Problems visible from file names alone (unpaired files, duplicate stems, list entries with no files) are
recorded in ``spec.issues`` and reported by :func:`mobileseg.data.check_dataset` together with the pixel-level
checks, so the user sees every problem at once instead of fixing them one run at a time.

Dataset YAML (every key optional)::

    path: .                      # data root; relative paths resolve against this YAML's folder
    preset: oxford_pets          # start from a bundled preset, then override keys below
    names: [background, pet]     # or {0: background, 1: pet}
    mask_values: {1: 1, 2: 0, 3: pet, 255: ignore}   # raw value -> class index, class name or ignore
    ignore_index: 255
    palette: [[0, 0, 0], [128, 0, 0]]                 # RGB masks: colour i is raw value i
    colors: [[0, 0, 0], [230, 159, 0]]                # display only: one colour per class for figures/overlays
    splits:                      # list files (one stem a line), relative to the root
      train: [splits/a.txt, splits/b.txt]
      val: splits/val.txt
      test: splits/test.txt
    val_fraction: 0.15           # seeded share of train moved to val when no val list/folder exists
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .loading import IMAGE_EXTENSIONS, DataError

SPLITS = ("train", "val", "test")
BINARY_NAMES = ["background", "foreground"]
YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
YAML_KEYS = {"path", "preset", "names", "mask_values", "ignore_index", "palette", "colors", "splits", "val_fraction"}
UNMAPPED = -1  # LUT sentinel for raw values the mapping does not mention


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
    _lut: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def mapping_key(self) -> str:
        """A stable text of everything that changes encoded masks (part of the disk-cache key)."""
        mv = None if self.mask_values is None else sorted(self.mask_values.items())
        return json.dumps({"mv": mv, "palette": self.palette, "ignore": self.ignore_index})

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
                for raw, cls in self.mask_values.items():
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


# --------------------------------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("mobileseg.data") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_doc(name: str) -> dict[str, Any]:
    """A preset's YAML as a dict (without ``path``: a preset is applied to a folder given separately)."""
    if name not in preset_names():
        raise DataError(f"unknown dataset preset '{name}'; presets: {', '.join(preset_names())}")
    text = (resources.files("mobileseg.data") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def sample_root() -> Path:
    """Folder of the bundled pets sample (60 pairs with its own data.yaml)."""
    return Path(str(resources.files("mobileseg") / "assets" / "pets_sample"))


# --------------------------------------------------------------------------------------------- listing files


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _by_stem(files: list[Path], root: Path, what: str, issues: list[tuple[str, str]]) -> dict[str, Path]:
    """stem -> file; two files with one stem (a.jpg and a.png) is an error naming both."""
    out: dict[str, Path] = {}
    dups: dict[str, list[Path]] = {}
    for f in files:
        if f.stem in out:
            dups.setdefault(f.stem, [out[f.stem]]).append(f)
        else:
            out[f.stem] = f
    for stem, group in dups.items():
        issues.append(
            ("error", f"duplicate {what} stem '{stem}': {', '.join(_rel(g, root) for g in group)} (keep one)")
        )
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def pair_folder(img_dir: Path, mask_dir: Path, root: Path, issues: list[tuple[str, str]]) -> dict[str, Sample]:
    """Pair ``img_dir``/``mask_dir`` files by stem; unpaired files on either side are errors naming them."""
    images = _by_stem(_image_files(img_dir), root, "image", issues)
    masks = _by_stem(_image_files(mask_dir), root, "mask", issues)
    for stem in sorted(images.keys() - masks.keys()):
        issues.append(("error", f"image without mask: {_rel(images[stem], root)} (no {_rel(mask_dir, root)}/{stem}.*)"))
    for stem in sorted(masks.keys() - images.keys()):
        issues.append(("error", f"mask without image: {_rel(masks[stem], root)} (no {_rel(img_dir, root)}/{stem}.*)"))
    lossy = sorted(_rel(m, root) for m in masks.values() if m.suffix.lower() in (".jpg", ".jpeg"))
    if lossy:
        issues.append(("warning", f"{len(lossy)} masks are JPEG (lossy: values blur at edges): {_names(lossy)}"))
    return {s: Sample(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())}


def _names(items: list[str], limit: int = 10) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def read_list(path: Path) -> list[str]:
    """Stems from a split list file: one a line; blank lines and '#' comments skipped; extensions and folders
    stripped (so 'images/a.jpg' and 'a' both mean stem 'a')."""
    stems = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = Path(line).name
            stems.append(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name)
    return stems


# ------------------------------------------------------------------------------------------ parsing the YAML


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
            key = int(k)
        except (TypeError, ValueError):
            raise DataError(f"{where}: mask value '{k}' is not an integer") from None
        if not 0 <= key <= 65535:
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
            raise DataError(f"{where}: mask value {key} -> {v!r} is not a class index, class name or 'ignore'")
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


def _parse_colors(raw: Any, names: list[str], where: str) -> list[tuple[int, int, int]] | None:
    """Display colours (YAML ``colors``): exactly one [r, g, b] per class; never used to decode masks."""
    colors = _parse_palette(raw, where, "colors")
    if colors is not None and len(colors) != len(names):
        raise DataError(f"{where}: 'colors' has {len(colors)} colours for {len(names)} classes (give one per class)")
    return colors


def _finish_classes(doc: dict[str, Any], where: str):
    """names, ignore_index, mask_values, palette from a YAML doc, validated against each other."""
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


# ------------------------------------------------------------------------------------------------- splitting


def _cut(stems: list[str], ratios: tuple[float, ...], seed: int) -> list[list[str]]:
    """Seeded shuffle of sorted stems cut by ratios; a split with a positive ratio gets at least one item when
    there are enough items, so a tiny folder still gets a val split."""
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n = len(order)
    counts = [int(round(n * r)) for r in ratios[1:]]
    for i, r in enumerate(ratios[1:]):
        if r > 0 and counts[i] == 0 and n - sum(counts) > 1:
            counts[i] = 1
    while sum(counts) >= n and any(counts):  # train keeps at least one
        counts[counts.index(max(counts))] -= 1
    out = [order[: n - sum(counts)]]
    start = n - sum(counts)
    for c in counts:
        out.append(order[start : start + c])
        start += c
    return out


def _list_files(value: Any, root: Path, yaml_dir: Path, where: str) -> list[Path]:
    """A split's list file(s): a path (relative to the root, then the YAML folder) or a bare name meaning
    ``splits/<name>.txt``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str | Path):
            raise DataError(f"{where}: split list entries must be file paths, got {item!r}")
        p = Path(item)
        candidates = [p] if p.is_absolute() else [root / p, yaml_dir / p, root / "splits" / f"{p}.txt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"{where}: split list file not found: {candidates[0]}")
        out.append(found)
    return out


def _split_folders(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s / "images").is_dir()]


def resolve_dataset(
    dataset: str | Path | None,
    preset: str | None = None,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    *,
    stems: dict[str, list[str]] | None = None,
) -> DatasetSpec:
    """Turn a dataset argument into a :class:`DatasetSpec` (files listed, nothing decoded).

    Args:
        dataset: a dataset YAML, a folder (``images/`` + ``masks/``, split folders, or holding a ``data.yaml``),
            a preset name (its folder looked up under ``$MOBILESEG_DATASETS``, ``./datasets``, ``~/datasets``),
            or ``None`` for the bundled 60-image pets sample.
        preset: a bundled preset ('oxford_pets', 'camvid') applied to the folder given in ``dataset``.
        split_ratios: train/val/test ratios of the random split (used only when there are no lists/folders).
        split_seed: seed of the random split and of ``val_fraction``.
        stems: a split recorded earlier (``split_info['stems']`` from a run's args.yaml) to reuse exactly.

    Raises:
        DataError: with a message naming the path when it cannot be resolved.
    """
    doc: dict[str, Any] = {}
    yaml_dir: Path
    if dataset is None and preset is None:
        root = sample_root()
        yaml_path = root / "data.yaml"
        source = "bundled pets sample"
    else:
        if dataset is None:
            dataset, preset_from_name = preset, True
        else:
            preset_from_name = False
        path = Path(str(dataset)).expanduser()
        yaml_path = None
        if path.is_file():
            if path.suffix.lower() not in (".yaml", ".yml"):
                raise DataError(f"dataset {path} is a file but not a dataset YAML (.yaml)")
            yaml_path = path
            source = str(path)
        elif path.is_dir():
            yaml_path = next((path / n for n in YAML_NAMES if (path / n).is_file()), None) if not preset else None
            if yaml_path is None and not preset and str(dataset) in preset_names():
                preset = str(dataset)  # data=camvid with a ./camvid folder: the user means the preset
            source = str(yaml_path or path)
        elif str(dataset) in preset_names():
            preset = str(dataset)
            found = _find_preset_folder(preset)
            if found is None:
                raise DataError(
                    f"dataset preset '{preset}' needs its folder: pass data=/path/to/{preset} preset={preset} "
                    f"(or put it in $MOBILESEG_DATASETS/{preset}, ./datasets/{preset} or ~/datasets/{preset})"
                )
            path = found
            source = str(path)
        else:
            what = "preset" if preset_from_name else "dataset"
            raise DataError(
                f"{what} not found: {dataset} (not a file, folder or preset name; presets: {', '.join(preset_names())})"
            )
        root = path if yaml_path is None else yaml_path.parent
        if preset:
            source = f"preset {preset} on {source}"
    if yaml_path is not None:
        try:
            loaded = yaml.safe_load(yaml_path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise DataError(f"cannot read dataset YAML {yaml_path}: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise DataError(f"dataset YAML {yaml_path} must be a mapping of keys")
        doc = loaded or {}
        unknown = sorted(set(doc) - YAML_KEYS)
        if unknown:
            raise DataError(f"{yaml_path}: unknown keys {unknown}; known: {sorted(YAML_KEYS)}")
        preset = doc.get("preset") or preset
        yaml_dir = yaml_path.parent
        if doc.get("path") is not None:
            p = Path(str(doc["path"])).expanduser()
            root = p if p.is_absolute() else (yaml_dir / p)
    else:
        yaml_dir = root
    if preset:
        merged = preset_doc(preset)
        if "names" in doc and "colors" not in doc:  # the preset's display colours belong to the preset's names
            merged.pop("colors", None)
        merged.update({k: v for k, v in doc.items() if k not in ("preset", "path")})
        doc = merged
    root = root.resolve()
    where = str(yaml_path) if yaml_path else (f"preset {preset}" if preset else str(root))
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")

    names, ignore_index, mapping, palette = _finish_classes(doc, where)
    colors = _parse_colors(doc.get("colors"), names, where)
    issues: list[tuple[str, str]] = []
    val_fraction = doc.get("val_fraction")
    if val_fraction is not None and not (isinstance(val_fraction, int | float) and 0 < val_fraction < 1):
        raise DataError(f"{where}: 'val_fraction' must be between 0 and 1 (got {val_fraction!r})")

    folders = _split_folders(root)
    if (root / "images").is_dir():
        pool = pair_folder(root / "images", root / "masks", root, issues)
        folder_pools: dict[str, dict[str, Sample]] = {}
    elif folders:
        folder_pools = {s: pair_folder(root / s / "images", root / s / "masks", root, issues) for s in folders}
        pool = {}
        for s in folders:  # the union, for list files over a folder layout
            for stem, smp in folder_pools[s].items():
                pool.setdefault(stem, smp)
    else:
        raise DataError(
            f"no images found in {root}: expected images/ + masks/ (paired by file name), or split folders "
            "train/images + train/masks (and val/, test/), or a dataset YAML"
        )

    lists = doc.get("splits")
    if lists is None:  # a folder with splits/train.txt etc. needs no YAML
        auto = {s: root / "splits" / f"{s}.txt" for s in SPLITS if (root / "splits" / f"{s}.txt").is_file()}
        lists = {s: str(p) for s, p in auto.items()} or None
    info: dict[str, Any] = {"seed": split_seed}
    split_stems: dict[str, list[str]]
    requested: set[str]
    if stems is not None:
        split_stems = {s: list(stems.get(s, [])) for s in SPLITS}
        info.update(mode="recorded")
        requested = {s for s in SPLITS if split_stems[s]}
    elif lists is not None:
        if not isinstance(lists, dict) or set(lists) - set(SPLITS):
            raise DataError(f"{where}: 'splits' must map train/val/test to a list file or a list of list files")
        split_stems = {}
        used: dict[str, list[str]] = {}
        for s in SPLITS:
            if lists.get(s) is None:
                continue
            files = _list_files(lists[s], root, yaml_dir, where)
            used[s] = [_rel(f, root) for f in files]
            seen: dict[str, None] = {}
            for f in files:
                listed = read_list(f)
                missing = [x for x in listed if x not in pool]
                if missing:
                    issues.append(
                        (
                            "error",
                            f"{len(missing)} stems in {_rel(f, root)} have no image/mask pair: {_names(missing, 20)}",
                        )
                    )
                seen.update(dict.fromkeys(x for x in listed if x in pool))
            split_stems[s] = list(seen)
        info.update(mode="lists", lists=used)
        requested = set(used)
        listed_all = {x for v in split_stems.values() for x in v}
        unlisted = sorted(set(pool) - listed_all)
        if unlisted:
            issues.append(("warning", f"{len(unlisted)} pairs are in no split list (unused): {_names(unlisted)}"))
    elif folder_pools:
        split_stems = {s: list(folder_pools[s]) for s in folders}
        info.update(mode="folders")
        requested = set(folders)
    else:
        parts = _cut(list(pool), tuple(split_ratios), split_seed)
        split_stems = dict(zip(SPLITS, parts, strict=True))
        info.update(mode="random", ratios=[float(r) for r in split_ratios])
        requested = {s for s, r in zip(SPLITS, split_ratios, strict=True) if r > 0}

    if val_fraction and stems is None and not split_stems.get("val") and "val" not in requested:
        train, val = _cut(split_stems.get("train", []), (1 - val_fraction, val_fraction), split_seed)
        split_stems["train"], split_stems["val"] = train, val
        info["val_fraction"] = float(val_fraction)
        requested.add("val")

    splits: dict[str, list[Sample]] = {}
    for s in SPLITS:
        src = folder_pools.get(s, pool) if info["mode"] == "folders" else pool
        if stems is not None:
            missing = [x for x in split_stems[s] if x not in src]
            if missing:
                issues.append(
                    ("error", f"{len(missing)} recorded {s} stems have no image/mask pair: {_names(missing, 20)}")
                )
        splits[s] = [src[x] for x in split_stems.get(s, []) if x in src]
    seen_in: dict[str, str] = {}
    for s in SPLITS:
        for smp in splits[s]:
            if smp.stem in seen_in:
                issues.append(
                    (
                        "error",
                        f"'{smp.stem}' is in both {seen_in[smp.stem]} and {s} "
                        f"({_rel(smp.image, root)}): a leak between splits",
                    )
                )
            else:
                seen_in[smp.stem] = s
    for s in SPLITS:
        if not splits[s]:
            if s == "train" or s in requested:
                issues.append(("error", f"split '{s}' is empty" + _empty_hint(s, info)))
            elif s == "val":
                issues.append(
                    (
                        "warning",
                        "no val split: validation metrics and best-model selection are off "
                        "(add a val list/folder or val_fraction)",
                    )
                )
    info["stems"] = {s: [smp.stem for smp in splits[s]] for s in SPLITS}
    return DatasetSpec(
        root=root,
        names=names,
        ignore_index=ignore_index,
        mask_values=mapping,
        palette=palette,
        splits=splits,
        split_info=info,
        source=source,
        issues=issues,
        colors=colors,
    )


def _empty_hint(split: str, info: dict[str, Any]) -> str:
    if info["mode"] == "lists" and split in info.get("lists", {}):
        return f" (list {', '.join(info['lists'][split])} names no existing pair)"
    if info["mode"] == "folders":
        return f" ({split}/images holds no paired files)"
    return " (too few pairs for the split ratios)" if info["mode"] == "random" else ""


def _find_preset_folder(name: str) -> Path | None:
    bases = [os.environ.get("MOBILESEG_DATASETS"), "datasets", "~/datasets"]
    for base in filter(None, bases):
        p = Path(base).expanduser() / name
        if p.is_dir():
            return p
    return None
