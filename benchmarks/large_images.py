"""Large images (issue #15): Dubai aerial tiles, crop training + slide inference vs resize, at native resolution.

``../shared/data/dubai_aerial``: 72 tiles of 509x544 to 2149x2062 px, 6 classes (Building, Land, Road, Vegetation,
Water, Unlabeled) + 255 unannotated (ignored), split by tile: train = tiles 1-6 (54), val = tile 7, test = tile 8
(the 9 largest-scene tiles, 2149x1479-1480). Trained here (dataset YAML under ``runs/large_data/``):

* ``crop``: ``train_scale=1 crop=512,512`` (random native-resolution crops, ``crop_fg`` default), so the run records
  ``infer=slide`` with a 512x512 window; tested with ``infer=slide`` (its own mode) and ``infer=resize`` (the same
  checkpoint, every test tile squeezed to 512x512);
* ``resize``: the plain default, every tile resized to ``imgsz=512`` for training and test (the reference).

Validation during training uses 3 of tile 7's 9 images (``--val-images``); every test scores at each tile's
native resolution (resize mode brings its prediction back up), and prints mIoU,
per-class IoU (Road is the thin class), seconds per megapixel and the test process's peak RSS (``/usr/bin/time``).

    .venv/bin/python benchmarks/large_images.py epochs=30 threads=1     # both trainings, then the 3 tests
    .venv/bin/python benchmarks/large_images.py --skip-train threads=1   # tests of existing runs only
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MS = str(ROOT / ".venv" / "bin" / "mobileseg")
NAMES = ["Building", "Land", "Road", "Vegetation", "Water", "Unlabeled"]
DATA = {
    "path": str(SHARED / "data" / "dubai_aerial"),
    "names": NAMES,
    "ignore_index": 255,
    "mask_values": {**{i: i for i in range(6)}, 255: "ignore"},
    "splits": {"train": "splits/train.txt", "val": "splits/val.txt", "test": "splits/test.txt"},
}
TRAIN = {
    "crop": ["train_scale=1", "crop=512,512", "batch=4"],
    "resize": ["imgsz=512", "batch=4"],
}
TESTS = [("crop", "slide"), ("crop", "resize"), ("resize", "resize")]


def dataset_yaml(val_images: int) -> Path:
    """The dataset YAML; validation during training on the first ``val_images`` tiles of tile 7 (sliding over all
    9 large val tiles after every epoch would cost more than the training itself on 2 cores)."""
    out = ROOT / "runs" / "large_data" / "dubai.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    val = (SHARED / "data" / "dubai_aerial" / "splits" / "val.txt").read_text().split()[:val_images]
    (out.parent / "val.txt").write_text("\n".join(val) + "\n")
    out.write_text(json.dumps({**DATA, "splits": {**DATA["splits"], "val": str(out.parent / "val.txt")}}, indent=1))
    return out


def test_run(train_name: str, infer: str, extra: list[str]) -> dict[str, object]:
    run = f"large_{train_name}_{infer}"
    best = ROOT / "runs" / "train" / f"large_{train_name}" / "weights" / "best.pt"
    cmd = ["/usr/bin/time", "-f", "maxrss_kb=%M", MS, "test", f"weights={best}", f"name={run}", "exist_ok=true"]
    cmd += [f"infer={infer}", *extra]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rss = int(re.findall(r"maxrss_kb=(\d+)", proc.stderr)[-1]) / 1024
    m = json.loads((ROOT / "runs" / "test" / run / "metrics.json").read_text())
    sizes = [Image.open(SHARED / "data" / "dubai_aerial" / "images" / f"{s}.jpg").size for s in m["stems"]]
    mp = sum(w * h for w, h in sizes) / 1e6
    per = {n: m["per_class"][n]["iou"] for n in NAMES if n in m["per_class"]}
    return {
        "train": train_name,
        "infer": infer,
        "miou": m["metrics"].get("miou", m["metrics"].get("iou")),
        "per_class": per,
        "s_per_mp": m["seconds"] / mp,
        "images": len(sizes),
        "peak_rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--val-images", type=int, default=3, help="tile-7 images validating during training")
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet.pt"))
    p.add_argument("overrides", nargs="*", help="key=value for the trainings (threads= also for the tests)")
    a = p.parse_intermixed_args(argv)
    data = dataset_yaml(a.val_images)
    if not a.skip_train:
        for name, keys in TRAIN.items():
            args = [f"data={data}", f"encoder_weights={a.weights}", f"name=large_{name}", "exist_ok=true"]
            subprocess.run([MS, "train", *keys, *args, "verbose=false", *a.overrides], check=True)
    test_extra = [o for o in a.overrides if o.startswith("threads=")]
    rows = [test_run(t, i, test_extra) for t, i in TESTS]
    with (ROOT / "runs" / "large_images.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print("\n| trained | test mode | mIoU | " + " | ".join(NAMES) + " | s/MP | peak RSS MB |")
    print("|---|---|---|" + "---|" * len(NAMES) + "---|---|")
    for r in rows:
        cls = " | ".join(f"{r['per_class'].get(n, float('nan')):.3f}" for n in NAMES)  # type: ignore[union-attr]
        print(
            f"| {r['train']} | {r['infer']} | {r['miou']:.3f} | {cls} | {r['s_per_mp']:.2f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
