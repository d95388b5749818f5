"""Multi-scale TTA on pets: are the larger views worth taking from the original photo instead of the 224 px image?

``test tta=flip+ms`` scales the image the evaluator holds (already resized to the model's input size), so its
1.25x view is an upsampled 224 px picture with no detail the 1x view lacks. This script scores a binary pets
checkpoint on the official test split both ways, with flips: views made from the 224 px image (what ``test``
does; its ``flip`` and ``flip+ms`` figures are reproduced exactly) and views resized straight from the original
photo. Images and masks of the 224 px path are decoded as the evaluator caches them (the ``oxford_pets`` preset:
trimap values 1 and 3 = pet), and the views are averaged with ``test``'s own flip and multi-scale functions into
one confusion matrix over all test pixels, as ``test`` keeps.

    .venv/bin/python benchmarks/tta_source.py runs/train/pets_e45_s0/weights/best.pt --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mobileseg.data.bands import unit, unit_tensor
from mobileseg.data.dataset import decode_sample, image_tensor
from mobileseg.data.loading import open_image
from mobileseg.data.resolve import resolve_dataset
from mobileseg.engine.inference import flip_average, resize_tta, scaled_size
from mobileseg.engine.metrics import ConfusionMatrix
from mobileseg.errors import run_script
from mobileseg.models.checkpoint import load_checkpoint
from mobileseg.models.segmenter import Segmenter

SIZE = (224, 224)
SCALE_SETS = {"flip": (1.0,), "flip+ms": (0.75, 1.0, 1.25), "flip+ms 0.75-1.5": (0.75, 1.0, 1.25, 1.5)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="a binary pets checkpoint (best.pt)")
    p.add_argument("--data", default="../shared/data/oxford_pets", help="the pets folder (images, masks, splits)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = Segmenter.from_checkpoint(load_checkpoint(args.weights)).eval()
    spec = resolve_dataset(args.data, "oxford_pets")
    probs_fn = flip_average(lambda x: torch.sigmoid(model(x).float()))  # what test's tta=flip runs

    scales = sorted({s for chosen in SCALE_SETS.values() for s in chosen})
    counts: dict[str, ConfusionMatrix] = {}
    start = time.time()
    for i, sample in enumerate(spec.splits["test"]):
        image, mask = decode_sample(spec, sample, SIZE)  # exactly as the evaluator caches the pair
        small, truth = unit(image_tensor(image))[None], torch.from_numpy(mask)
        photo = open_image(sample.image)
        probs: dict[tuple[str, float], torch.Tensor] = {}  # each view once, back at 224 px
        with torch.no_grad():
            for s in scales:
                probs["224 px", s] = resize_tta(probs_fn, small, (s,))  # test's own multi-scale TTA, one scale
                if s == 1.0:
                    probs["photo", s] = probs["224 px", s]
                    continue
                h, w = scaled_size(SIZE, s, 32)
                x = unit_tensor(np.asarray(photo.resize((w, h), Image.Resampling.BILINEAR)))[None]
                probs["photo", s] = F.interpolate(probs_fn(x), size=SIZE, mode="bilinear", align_corners=False)
        for setting, chosen in SCALE_SETS.items():
            for source in ("224 px", "photo") if len(chosen) > 1 else ("224 px",):  # 1x: the same either way
                prob = sum(probs[source, s] for s in chosen) / len(chosen)
                cm = counts.setdefault(f"{setting}, views from the {source}", ConfusionMatrix(2))
                cm.update(truth, (prob[0, 0] >= 0.5).long())
        if i % 50 == 0:
            print(f"{i}/{len(spec.splits['test'])} images, {time.time() - start:.0f} s", flush=True)
    for setting, cm in counts.items():
        print(f"{args.weights}  {setting}: test IoU {cm.compute()['iou']:.4f}")


if __name__ == "__main__":
    sys.exit(run_script(main))
