"""Finding a dataset's files: bundled presets, image/mask pairs by stem, split list files.

Only names are looked at here (nothing is decoded), so listing a large folder is instant. Problems visible from
names alone (unpaired files, duplicate stems, lossy JPEG masks) are appended to ``issues`` as ``(level, message)``
so :func:`mobileseg.data.check_dataset` can report them together with the pixel-level problems.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .loading import IMAGE_EXTENSIONS, DataError
from .spec import SPLITS, Sample, relative, short_list


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
            ("error", f"duplicate {what} stem '{stem}': {', '.join(relative(g, root) for g in group)} (keep one)")
        )
    return out


def pair_folder(img_dir: Path, mask_dir: Path, root: Path, issues: list[tuple[str, str]]) -> dict[str, Sample]:
    """Pair ``img_dir``/``mask_dir`` files by stem; unpaired files on either side are errors naming them."""
    images = _by_stem(_image_files(img_dir), root, "image", issues)
    masks = _by_stem(_image_files(mask_dir), root, "mask", issues)
    for stem in sorted(images.keys() - masks.keys()):
        issues.append(
            ("error", f"image without mask: {relative(images[stem], root)} (no {relative(mask_dir, root)}/{stem}.*)")
        )
    for stem in sorted(masks.keys() - images.keys()):
        issues.append(
            ("error", f"mask without image: {relative(masks[stem], root)} (no {relative(img_dir, root)}/{stem}.*)")
        )
    lossy = sorted(relative(m, root) for m in masks.values() if m.suffix.lower() in (".jpg", ".jpeg"))
    if lossy:
        issues.append(("warning", f"{len(lossy)} masks are JPEG (lossy: values blur at edges): {short_list(lossy)}"))
    return {s: Sample(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())}


def read_list(path: Path) -> list[str]:
    """Stems from a split list file: one a line; blank lines and '#' comments skipped; extensions and folders
    stripped (so 'images/a.jpg' and 'a' both mean stem 'a')."""
    stems = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"split list {path} is not UTF-8 text ({e})") from None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = Path(line).name
            stems.append(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name)
    return stems


def list_files(value: Any, root: Path, yaml_dir: Path, where: str) -> list[Path]:
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


def split_folders(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s / "images").is_dir()]


def find_preset_folder(name: str) -> Path | None:
    bases = [os.environ.get("MOBILESEG_DATASETS"), "datasets", "~/datasets"]
    for base in filter(None, bases):
        p = Path(base).expanduser() / name
        if p.is_dir():
            return p
    return None
