"""The bottom/right-edge comb of issue #16, measured on real predictions of a checkpoint.

For each image, ``mobileseg``'s Predictor gives the class map at the image's own size; the script counts, per row,
the class changes along the row (on/off transitions), and reports the mean over the last 4 rows against the mean
over the rows above (and the same for the last 4 columns). The tutorial decoder's masks break into a comb along
the bottom/right borders (48-110 transitions per row where objects reach the edge, against 1-6 above); a decoder
that treats every pixel alike stays at the level of the rows above (ratio ~1).

    .venv/bin/python benchmarks/edge_comb.py runs/train/pets/weights/best.pt \\
        ../shared/data/oxford_pets/images/{Abyssinian_10,Abyssinian_40,Bengal_150}.jpg
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mobileseg.deploy.runtimes import load_predictor
from mobileseg.errors import run_script


def transitions(mask: np.ndarray) -> np.ndarray:
    """Class changes along each row of ``mask`` (H, W)."""
    return (mask[:, 1:] != mask[:, :-1]).sum(axis=1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights")
    p.add_argument("images", nargs="+")
    a = p.parse_args(argv)
    predictor = load_predictor(a.weights)
    print("| image | last 4 rows | rows above | ratio | last 4 columns | columns before | ratio |")
    print("|---|---|---|---|---|---|---|")
    for path in a.images:
        mask = np.asarray(predictor.predict_image(path).mask)
        rows, cols = transitions(mask), transitions(mask.T)
        cells = []
        for t in (rows, cols):
            edge, above = float(t[-4:].mean()), float(t[:-4].mean())
            cells += [f"{edge:.1f}", f"{above:.1f}", f"{edge / max(above, 1e-9):.2f}"]
        print(f"| {path.rsplit('/', 1)[-1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(run_script(main))
