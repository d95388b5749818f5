"""Multi-scale TTA on pets: are the larger views worth taking from the original photo instead of the 224 px image?

``test tta=flip+ms`` scales the image the evaluator holds (already resized to the model's input size), so its
1.25x view is an upsampled 224 px picture with no detail the 1x view lacks. This script scores a binary pets
checkpoint on the official test split both ways, with flips: views made from the 224 px image (what ``test``
does; its ``flip`` and ``flip+ms`` figures are reproduced exactly) and views resized straight from the original
photo. Masks are the evaluator's: nearest-resized to 224 px, trimap values 1 and 3 = pet. One confusion count
over all test pixels, as ``test`` keeps.

    .venv/bin/python benchmarks/tta_source.py runs/train/pets_e45_s0/weights/best.pt --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mobileseg.data.loading import open_image, resize_nearest
from mobileseg.engine.inference import scaled_size
from mobileseg.models.checkpoint import load_checkpoint
from mobileseg.models.segmenter import Segmenter

SIZE = 224
SCALE_SETS = {"flip": (1.0,), "flip+ms": (0.75, 1.0, 1.25), "flip+ms 0.75-1.5": (0.75, 1.0, 1.25, 1.5)}


def as_batch(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a (1, 3, H, W) float batch in [0, 1] (the model normalises it itself)."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="a binary pets checkpoint (best.pt)")
    p.add_argument("--data", default="../shared/data/oxford_pets", help="the pets folder (images, masks, splits)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = Segmenter.from_checkpoint(load_checkpoint(args.weights)).eval()

    def flip_probs(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = torch.sigmoid(model(torch.cat([x, x.flip(-1)])).float())
        return (out[:1] + out[1:].flip(-1)) / 2

    names = open(f"{args.data}/splits/official_test.txt").read().split()
    views = sorted({scaled_size((SIZE, SIZE), s, 32) for scales in SCALE_SETS.values() for s in scales})
    counts: dict[str, list[int]] = {}  # setting -> [true positives, false positives, false negatives]
    start = time.time()
    for i, name in enumerate(names):
        raw = resize_nearest(np.asarray(Image.open(f"{args.data}/masks/{name}.png")), (SIZE, SIZE))
        truth = torch.from_numpy((raw == 1) | (raw == 3))
        photo = open_image(f"{args.data}/images/{name}.jpg")
        drafted = open_image(f"{args.data}/images/{name}.jpg", draft=(SIZE, SIZE))
        small = as_batch(drafted.resize((SIZE, SIZE), Image.Resampling.BILINEAR))  # as the dataset caches it
        probs: dict[tuple[str, tuple[int, int]], torch.Tensor] = {}
        for view in views:
            if view == (SIZE, SIZE):
                probs["224 px", view] = probs["photo", view] = flip_probs(small)
                continue
            upsampled = F.interpolate(small, size=view, mode="bilinear", align_corners=False)
            direct = as_batch(photo.resize((view[1], view[0]), Image.Resampling.BILINEAR))
            for source, x in (("224 px", upsampled), ("photo", direct)):
                probs[source, view] = F.interpolate(flip_probs(x), size=(SIZE, SIZE), mode="bilinear")
        for source in ("224 px", "photo"):
            for setting, scales in SCALE_SETS.items():
                if setting == "flip" and source == "photo":
                    continue  # the 1x view is the same either way
                chosen = [scaled_size((SIZE, SIZE), s, 32) for s in scales]
                pred = (sum(probs[source, v] for v in chosen) / len(chosen))[0, 0] >= 0.5
                c = counts.setdefault(f"{setting}, views from the {source}", [0, 0, 0])
                c[0] += int((pred & truth).sum())
                c[1] += int((pred & ~truth).sum())
                c[2] += int((~pred & truth).sum())
        if i % 50 == 0:
            print(f"{i}/{len(names)} images, {time.time() - start:.0f} s", flush=True)
    for setting, (tp, fp, fn) in counts.items():
        print(f"{args.weights}  {setting}: test IoU {tp / (tp + fp + fn):.4f}")


if __name__ == "__main__":
    main()
