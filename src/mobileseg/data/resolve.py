"""``resolve_dataset``: what the user typed (a YAML, a folder, a preset name, or nothing) -> :class:`DatasetSpec`.

It only lists files; nothing is decoded here, so it is instant even on large folders. The steps, each its own
function: locate the dataset (:func:`_locate`), read its YAML and merge a preset (:func:`_read_doc`), pair the
files (:func:`_pools`), choose the split stems (recorded, list files, split folders, or a seeded random split:
:func:`_split_stems`), then turn stems into samples while looking for leaks and empty splits
(:func:`_assign`). Problems visible from file names alone are recorded in ``spec.issues`` and reported by
:func:`mobileseg.data.check_dataset` with the pixel-level checks, so the user sees every problem at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .files import (
    find_preset_folder,
    list_files,
    pair_folder,
    preset_doc,
    preset_names,
    read_list,
    sample_root,
    split_folders,
)
from .loading import DataError
from .spec import MASK_RESIZE, SPLITS, DatasetSpec, Sample, parse_classes, parse_colors, relative, short_list

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
YAML_KEYS = {
    "path",
    "preset",
    "names",
    "mask_values",
    "ignore_index",
    "palette",
    "colors",
    "splits",
    "val_fraction",
    "mask_resize",
}
Issues = list[tuple[str, str]]


@dataclass
class _Located:
    """Where a dataset argument points: its root folder, its YAML (if any), the preset and a display name."""

    root: Path
    yaml_path: Path | None
    preset: str | None
    source: str
    doc: dict[str, Any] = field(default_factory=dict)
    yaml_dir: Path | None = None


@dataclass
class _Pools:
    """Paired files: ``pool`` (every stem), and per split folder when the layout has train/, val/, test/."""

    pool: dict[str, Sample]
    folders: list[str]
    folder_pools: dict[str, dict[str, Sample]]


def resolve_dataset(
    dataset: str | Path | None,
    preset: str | None = None,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    *,
    stems: dict[str, list[str]] | None = None,
    channels: int = 3,
    mask_resize: str | None = None,
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
        channels: input bands (the config's ``channels``; 3 = RGB), recorded in the spec for decoding.
        mask_resize: 'nearest' to resize masks of another size than their image (the config's key; None = the
            YAML's ``mask_resize``, else a size mismatch is an error).

    Raises:
        DataError: with a message naming the path when it cannot be resolved.

    Example:
        >>> spec = resolve_dataset(None)  # the bundled pets sample
        >>> spec.names, sum(len(v) for v in spec.splits.values())
        (['background', 'pet'], 60)
    """
    loc = _read_doc(_locate(dataset, preset))
    root = loc.root.resolve()
    where = str(loc.yaml_path) if loc.yaml_path else (f"preset {loc.preset}" if loc.preset else str(root))
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    names, ignore_index, mapping, palette = parse_classes(loc.doc, where)
    colors = parse_colors(loc.doc.get("colors"), names, where)
    val_fraction = loc.doc.get("val_fraction")
    if val_fraction is not None and not (isinstance(val_fraction, int | float) and 0 <= val_fraction < 1):
        raise DataError(f"{where}: 'val_fraction' must be at least 0 and under 1 (got {val_fraction!r})")
    resize = _mask_resize(mask_resize or loc.doc.get("mask_resize"), where)
    issues: Issues = []
    pools = _pools(root, issues)
    yaml_dir = loc.yaml_dir or root
    info: dict[str, Any] = {"seed": split_seed}
    if val_fraction == 0:  # asked for: train on every train image, no validation (a final fit)
        info["val_fraction"] = 0.0
    split_stems, requested = _split_stems(
        loc.doc.get("splits"), root, yaml_dir, where, pools, tuple(split_ratios), stems, info, issues
    )
    if val_fraction and stems is None and not split_stems.get("val") and "val" not in requested:
        train, val = _cut(split_stems.get("train", []), (1 - val_fraction, val_fraction), split_seed)
        split_stems["train"], split_stems["val"] = train, val
        info["val_fraction"] = float(val_fraction)
        requested.add("val")
    splits = _assign(split_stems, pools, root, info, requested, recorded=stems is not None, issues=issues)
    info["stems"] = {s: [smp.stem for smp in splits[s]] for s in SPLITS}
    return DatasetSpec(
        root=root,
        names=names,
        ignore_index=ignore_index,
        mask_values=mapping,
        palette=palette,
        splits=splits,
        split_info=info,
        source=loc.source,
        issues=issues,
        colors=colors,
        channels=int(channels),
        mask_resize=resize,
    )


def _mask_resize(value: Any, where: str) -> str | None:
    """The ``mask_resize`` value checked: 'nearest', or None ('none', empty) for "a size mismatch is an error"."""
    if value is None or str(value).lower() in ("none", "", "false"):
        return None
    if str(value).lower() not in MASK_RESIZE:
        raise DataError(f"{where}: mask_resize must be one of {list(MASK_RESIZE)} or none (got {value!r})")
    return str(value).lower()


def _locate(dataset: str | Path | None, preset: str | None) -> _Located:
    """Find the folder (and YAML) a dataset argument means; a name that is no path may be a preset."""
    if dataset is None and preset is None:
        root = sample_root()
        return _Located(root, root / "data.yaml", None, "bundled pets sample")
    preset_from_name = dataset is None
    if dataset is None:
        dataset = preset
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
        found = find_preset_folder(preset)
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
    return _Located(root, yaml_path, preset, source)


def _read_doc(loc: _Located) -> _Located:
    """Read the dataset YAML (unknown keys are errors), apply its ``path``, then merge it over the preset."""
    doc: dict[str, Any] = {}
    preset = loc.preset
    if loc.yaml_path is not None:
        try:
            loaded = yaml.safe_load(loc.yaml_path.read_bytes())  # UTF-8 on every OS; other bytes: a YAMLError
        except (OSError, yaml.YAMLError) as e:
            raise DataError(f"cannot read dataset YAML {loc.yaml_path}: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise DataError(f"dataset YAML {loc.yaml_path} must be a mapping of keys")
        doc = loaded or {}
        unknown = sorted(set(doc) - YAML_KEYS)
        if unknown:
            raise DataError(f"{loc.yaml_path}: unknown keys {unknown}; known: {sorted(YAML_KEYS)}")
        preset = doc.get("preset") or preset
        loc.yaml_dir = loc.yaml_path.parent
        if doc.get("path") is not None:
            p = Path(str(doc["path"])).expanduser()
            loc.root = p if p.is_absolute() else (loc.yaml_dir / p)
    if preset:
        merged = preset_doc(preset)
        if "names" in doc and "colors" not in doc:  # the preset's display colours belong to the preset's names
            merged.pop("colors", None)
        merged.update({k: v for k, v in doc.items() if k not in ("preset", "path")})
        doc = merged
    loc.preset, loc.doc = preset, doc
    return loc


def _pools(root: Path, issues: Issues) -> _Pools:
    """Pair files of ``images/`` + ``masks/``, or of each split folder (``train/images`` + ``train/masks``...)."""
    folders = split_folders(root)
    if (root / "images").is_dir():
        return _Pools(pair_folder(root / "images", root / "masks", root, issues), folders, {})
    if not folders:
        raise DataError(
            f"no images found in {root}: expected images/ + masks/ (paired by file name), or split folders "
            "train/images + train/masks (and val/, test/), or a dataset YAML"
        )
    folder_pools = {s: pair_folder(root / s / "images", root / s / "masks", root, issues) for s in folders}
    pool: dict[str, Sample] = {}
    for s in folders:  # the union, for list files over a folder layout
        for stem, smp in folder_pools[s].items():
            pool.setdefault(stem, smp)
    return _Pools(pool, folders, folder_pools)


def _split_stems(
    lists: Any,
    root: Path,
    yaml_dir: Path,
    where: str,
    pools: _Pools,
    split_ratios: tuple[float, ...],
    stems: dict[str, list[str]] | None,
    info: dict[str, Any],
    issues: Issues,
) -> tuple[dict[str, list[str]], set[str]]:
    """Stems of each split and the splits the user asked for, by the first mode that applies: a recorded split,
    list files (from the YAML or ``splits/<split>.txt``), split folders, else a seeded random split."""
    if lists is None:  # a folder with splits/train.txt etc. needs no YAML
        auto = {s: root / "splits" / f"{s}.txt" for s in SPLITS if (root / "splits" / f"{s}.txt").is_file()}
        lists = {s: str(p) for s, p in auto.items()} or None
    if stems is not None:
        split_stems = {s: list(stems.get(s, [])) for s in SPLITS}
        info.update(mode="recorded")
        return split_stems, {s for s in SPLITS if split_stems[s]}
    if lists is not None:
        return _from_lists(lists, root, yaml_dir, where, pools.pool, info, issues)
    if pools.folder_pools:
        info.update(mode="folders")
        return {s: list(pools.folder_pools[s]) for s in pools.folders}, set(pools.folders)
    parts = _cut(list(pools.pool), split_ratios, int(info["seed"]))
    info.update(mode="random", ratios=[float(r) for r in split_ratios])
    return dict(zip(SPLITS, parts, strict=True)), {s for s, r in zip(SPLITS, split_ratios, strict=True) if r > 0}


def _from_lists(
    lists: Any, root: Path, yaml_dir: Path, where: str, pool: dict[str, Sample], info: dict[str, Any], issues: Issues
) -> tuple[dict[str, list[str]], set[str]]:
    """Split stems from list files; listed stems without a pair are errors, pairs in no list a warning."""
    if not isinstance(lists, dict) or set(lists) - set(SPLITS):
        raise DataError(f"{where}: 'splits' must map train/val/test to a list file or a list of list files")
    split_stems: dict[str, list[str]] = {}
    used: dict[str, list[str]] = {}
    for s in SPLITS:
        if lists.get(s) is None:
            continue
        files = list_files(lists[s], root, yaml_dir, where)
        used[s] = [relative(f, root) for f in files]
        seen: dict[str, None] = {}
        for f in files:
            listed = read_list(f)
            missing = [x for x in listed if x not in pool]
            if missing:
                issues.append(
                    (
                        "error",
                        f"{len(missing)} stems in {relative(f, root)} have no image/mask pair: "
                        f"{short_list(missing, 20)}",
                    )
                )
            seen.update(dict.fromkeys(x for x in listed if x in pool))
        split_stems[s] = list(seen)
    info.update(mode="lists", lists=used)
    listed_all = {x for v in split_stems.values() for x in v}
    unlisted = sorted(set(pool) - listed_all)
    if unlisted:
        issues.append(("warning", f"{len(unlisted)} pairs are in no split list (unused): {short_list(unlisted)}"))
    return split_stems, set(used)


def _assign(
    split_stems: dict[str, list[str]],
    pools: _Pools,
    root: Path,
    info: dict[str, Any],
    requested: set[str],
    recorded: bool,
    issues: Issues,
) -> dict[str, list[Sample]]:
    """Stems -> samples; a stem in two splits (a leak) and an empty requested split are errors."""
    splits: dict[str, list[Sample]] = {}
    for s in SPLITS:
        src = pools.folder_pools.get(s, pools.pool) if info["mode"] == "folders" else pools.pool
        if recorded:
            missing = [x for x in split_stems[s] if x not in src]
            if missing:
                issues.append(
                    ("error", f"{len(missing)} recorded {s} stems have no image/mask pair: {short_list(missing, 20)}")
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
                        f"({relative(smp.image, root)}): a leak between splits",
                    )
                )
            else:
                seen_in[smp.stem] = s
    for s in SPLITS:
        if splits[s]:
            continue
        if s == "train" or s in requested:
            issues.append(("error", f"split '{s}' is empty" + _empty_hint(s, info)))
        elif s == "val" and info.get("val_fraction") != 0:
            issues.append(
                (
                    "warning",
                    "no val split: validation metrics and best-model selection are off "
                    "(add a val list/folder or val_fraction)",
                )
            )
    return splits


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


def _empty_hint(split: str, info: dict[str, Any]) -> str:
    if info["mode"] == "lists" and split in info.get("lists", {}):
        return f" (list {', '.join(info['lists'][split])} names no existing pair)"
    if info["mode"] == "folders":
        return f" ({split}/images holds no paired files)"
    return " (too few pairs for the split ratios)" if info["mode"] == "random" else ""
