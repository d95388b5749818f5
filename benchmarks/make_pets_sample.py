"""Rebuild the bundled sample ``src/mobileseg/assets/pets_sample`` from an Oxford-IIIT Pet folder.

The sample lets ``mobileseg train`` (no arguments) run end to end without a download: 60 real image/trimap pairs,
30 cats and 30 dogs spread over as many breeds as possible, shrunk so the long side is at most 256 px, with a fixed
44/8/8 train/val/test split that holds cats and dogs in every split. Everything is deterministic: re-running on the
same source gives the same files.

Usage::

    python benchmarks/make_pets_sample.py --src /path/to/oxford_pets [--out src/mobileseg/assets/pets_sample]

The source folder holds ``images/<name>.jpg`` and ``masks/<name>.png`` (trimaps: 1 pet, 2 background, 3 border).
In Oxford-IIIT Pet, cat breeds are capitalised (``Abyssinian_1``) and dog breeds are lower case
(``american_bulldog_1``).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PER_SPECIES = 30
VAL_PER_SPECIES = 4
TEST_PER_SPECIES = 4
LONG_SIDE = 256
JPEG_QUALITY = 90
SEED = 0

DATA_YAML = """\
# Bundled sample of the Oxford-IIIT Pet Dataset (see README.md): 60 pairs, trimaps as a binary pet/background task.
path: .
names: [background, pet]
mask_values:
  1: 1  # pet
  2: 0  # background
  3: 1  # border: counted as pet, as in the oxford_pets preset
splits:
  train: splits/train.txt
  val: splits/val.txt
  test: splits/test.txt
"""

LICENSE = """\
The images and trimap annotations in this folder are a resized subset of the Oxford-IIIT Pet Dataset:

  O. M. Parkhi, A. Vedaldi, A. Zisserman, C. V. Jawahar, "Cats and Dogs",
  IEEE Conference on Computer Vision and Pattern Recognition (CVPR), 2012.
  https://www.robots.ox.ac.uk/~vgg/data/pets/

The dataset is made available by its authors under the Creative Commons Attribution-ShareAlike 4.0
International licence (CC BY-SA 4.0): https://creativecommons.org/licenses/by-sa/4.0/
The copyright of the images remains with their original owners.

Changes made here (ShareAlike: these derived files are under the same CC BY-SA 4.0 licence): images were
decoded, converted to RGB, rotated upright by their EXIF orientation, shrunk so their long side is at most
{long} px (Lanczos) and saved as JPEG quality {q}; trimaps were shrunk to the same size with nearest-neighbour
resampling (values unchanged: 1 pet, 2 background, 3 border) and saved as PNG. File names are the original ones.
The rest of mobileseg is under its own (MIT) licence; this licence covers the files in this folder only.
"""


def natural_key(stem: str) -> tuple[str, int]:
    m = re.match(r"(.+)_(\d+)$", stem)
    return (m.group(1), int(m.group(2))) if m else (stem, -1)


def pick(src: Path) -> dict[str, list[str]]:
    """30 cat and 30 dog stems: round-robin over breeds (sorted), lowest image numbers first, skipping masks with
    no pet pixel (one source image has an all-background trimap)."""
    by_breed: dict[str, list[str]] = defaultdict(list)
    for p in sorted((src / "images").glob("*.jpg"), key=lambda p: natural_key(p.stem)):
        if (src / "masks" / f"{p.stem}.png").is_file():
            by_breed[natural_key(p.stem)[0]].append(p.stem)
    chosen: dict[str, list[str]] = {}
    for species, is_cat in (("cat", True), ("dog", False)):
        breeds = sorted(b for b in by_breed if b[0].isupper() == is_cat)
        queues = {b: list(by_breed[b]) for b in breeds}
        out: list[str] = []
        while len(out) < PER_SPECIES and any(queues.values()):
            for b in breeds:
                while queues[b] and len(out) < PER_SPECIES:
                    stem = queues[b].pop(0)
                    if (np.asarray(Image.open(src / "masks" / f"{stem}.png")) != 2).any():
                        out.append(stem)
                        break
        chosen[species] = out
    return chosen


def shrink(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    s = min(1.0, LONG_SIDE / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="Oxford-IIIT Pet folder (images/, masks/)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "src/mobileseg/assets/pets_sample")
    args = ap.parse_args()
    chosen = pick(args.src)
    if args.out.exists():
        shutil.rmtree(args.out)
    for d in ("images", "masks", "splits"):
        (args.out / d).mkdir(parents=True)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for stems in chosen.values():
        order = sorted(stems, key=natural_key)
        random.Random(SEED).shuffle(order)
        splits["val"] += order[:VAL_PER_SPECIES]
        splits["test"] += order[VAL_PER_SPECIES : VAL_PER_SPECIES + TEST_PER_SPECIES]
        splits["train"] += order[VAL_PER_SPECIES + TEST_PER_SPECIES :]
    for stem in [s for v in chosen.values() for s in v]:
        im = ImageOps.exif_transpose(Image.open(args.src / "images" / f"{stem}.jpg")).convert("RGB")
        mask = ImageOps.exif_transpose(Image.open(args.src / "masks" / f"{stem}.png"))
        assert mask.size == im.size, stem
        size = shrink(im.size)
        im.resize(size, Image.Resampling.LANCZOS).save(args.out / "images" / f"{stem}.jpg", quality=JPEG_QUALITY)
        mask.resize(size, Image.Resampling.NEAREST).save(args.out / "masks" / f"{stem}.png", optimize=True)
    for name, stems in splits.items():
        (args.out / "splits" / f"{name}.txt").write_text("\n".join(sorted(stems, key=natural_key)) + "\n")
    (args.out / "data.yaml").write_text(DATA_YAML)
    (args.out / "LICENSE.txt").write_text(LICENSE.format(long=LONG_SIDE, q=JPEG_QUALITY))
    breeds = sorted({natural_key(s)[0] for v in chosen.values() for s in v})
    listing = "\n".join(f"- {sp}s ({len(v)}): " + ", ".join(sorted(v, key=natural_key)) for sp, v in chosen.items())
    readme = f"""# pets_sample: 60 Oxford-IIIT Pet images with trimaps

The default dataset of `mobileseg` (used when no `data=` is given), small enough to ship in the package
and to train on a laptop CPU in minutes. It is a demo, not a benchmark: use the full dataset
(`preset=oxford_pets data=/path/to/oxford_pets`) for real numbers.

Source: The Oxford-IIIT Pet Dataset, O. M. Parkhi, A. Vedaldi, A. Zisserman, C. V. Jawahar, "Cats and Dogs",
CVPR 2012, https://www.robots.ox.ac.uk/~vgg/data/pets/ . Licence: CC BY-SA 4.0; the copyright of the images
remains with their owners. See LICENSE.txt.

Contents:
- `images/<name>.jpg`: RGB, EXIF-uprighted, long side <= {LONG_SIDE} px (Lanczos), JPEG quality {JPEG_QUALITY}.
- `masks/<name>.png`: the original trimaps resized to the image size with nearest-neighbour
  (1 pet, 2 background, 3 border; `data.yaml` maps 1 and 3 to pet, 2 to background).
- `splits/train.txt` ({len(splits["train"])}), `splits/val.txt` ({len(splits["val"])}),
  `splits/test.txt` ({len(splits["test"])}): {VAL_PER_SPECIES} cats + {VAL_PER_SPECIES} dogs in val and
  {TEST_PER_SPECIES} + {TEST_PER_SPECIES} in test, chosen with a seeded shuffle (seed {SEED}).

Selection: {PER_SPECIES} cats and {PER_SPECIES} dogs, round-robin over the breeds of the source copy
(lowest image numbers first; images whose trimap holds no pet pixel are skipped), {len(breeds)} breeds:

{listing}

Rebuild with `python benchmarks/make_pets_sample.py --src /path/to/oxford_pets` (deterministic).
"""
    (args.out / "README.md").write_text(readme)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {sum(map(len, chosen.values()))} pairs, {len(breeds)} breeds, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
