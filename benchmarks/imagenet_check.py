"""Acceptance check: does our encoder, loaded from a torchvision weight file, still see cats as cats?

Why: the encoder splits torchvision's blocks to tap their expand outputs and drops ``features[18]``. If the
split or the weight loading were wrong, segmentation would still train, just worse, and nobody would notice.
Here the ImageNet classifier head (``features[18]``, pooling, ``classifier``) from the same file is put back on
top of our encoder's deepest tap, and real cat photos (Oxford-IIIT Pet, Abyssinian and Bengal) must get an
ImageNet cat class (indices 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat) in their top 5.

It also checks, batch by batch, that these logits equal torchvision's own ``mobilenet_v2`` with the same
weights, i.e. our last tap feeds the head exactly as ``features[17]`` does in torchvision.

Usage:
    python benchmarks/imagenet_check.py [WEIGHTS.pt] [--images DIR] [--breeds Abyssinian Bengal]

Exits 1 if the overall fraction is below ``--threshold`` (0.9) or the logits disagree with torchvision.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from mobileseg.errors import run_script
from mobileseg.models import Segmenter, safe_torch_load

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO / "../shared/weights/mobilenet_v2_imagenet.pt"
DEFAULT_IMAGES = REPO / "../shared/data/oxford_pets/images"
CAT_CLASSES = frozenset(range(281, 286))  # ImageNet-1k (torchvision order): 281 tabby .. 285 Egyptian cat


def load_image(path: Path) -> Tensor:
    """torchvision's ImageNet eval preprocessing up to normalisation: resize 256, centre crop 224, RGB [0, 1]."""
    with Image.open(path) as im:
        img = im.convert("RGB")  # some pets files are palette/RGBA
    img = TF.resize(img, 256, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    img = TF.center_crop(img, 224)
    return TF.to_tensor(img)


def imagenet_head(tv: nn.Module) -> nn.Module:
    """torchvision's layers after our last tap: features[18], global average pool, classifier."""
    return nn.Sequential(tv.features[18], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), tv.classifier)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="?", type=Path, default=DEFAULT_WEIGHTS, help="torchvision-layout .pt")
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Oxford-IIIT Pet images folder")
    ap.add_argument("--breeds", nargs="+", default=["Abyssinian", "Bengal"])
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=25)
    args = ap.parse_args(argv)

    weights = args.weights.resolve()
    model = Segmenter(num_classes=1, encoder_weights=weights).eval()
    tv = mobilenet_v2()
    tv.load_state_dict(safe_torch_load(weights), strict=True)
    tv.eval()
    head = imagenet_head(tv)
    print(f"weights: {weights}")

    t0 = time.perf_counter()
    max_diff = 0.0
    hits_total = n_total = top1_total = 0
    for breed in args.breeds:
        files = sorted(args.images.glob(f"{breed}_*.jpg"))
        if not files:
            print(f"no images for breed {breed} in {args.images}", file=sys.stderr)
            return 1
        hits = top1 = 0
        for i in range(0, len(files), args.batch):
            x = torch.stack([load_image(f) for f in files[i : i + args.batch]])
            with torch.inference_mode():
                logits = head(model.encode(x)[-1])  # Segmenter normalises; deepest tap = features[17] output
                ref = tv((x - model.mean) / model.std)
            max_diff = max(max_diff, (logits - ref).abs().max().item())
            top5 = logits.topk(5, dim=1).indices
            hits += sum(bool(CAT_CLASSES & set(row.tolist())) for row in top5)
            top1 += sum(int(row[0]) in CAT_CLASSES for row in top5)
        n = len(files)
        print(f"{breed:<12} {hits}/{n} = {hits / n:.3f} top-5 cat   (top-1 cat {top1 / n:.3f})")
        hits_total += hits
        top1_total += top1
        n_total += n
    frac = hits_total / n_total
    print(f"{'total':<12} {hits_total}/{n_total} = {frac:.3f} top-5 cat   (top-1 cat {top1_total / n_total:.3f})")
    print(f"max |logit difference| vs torchvision mobilenet_v2: {max_diff:.2e}   ({time.perf_counter() - t0:.1f} s)")
    ok = frac >= args.threshold and max_diff < 1e-3
    print(f"{'PASS' if ok else 'FAIL'}: top-5 cat fraction {frac:.3f} (threshold {args.threshold})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_script(main))
