"""Peak memory of sliding-window prediction on one very large image (the streaming path of slide mode).

Predicts a random ``--size`` x ``--size`` RGB image with a random-init 3-class model (0.35 width, 224x224
windows, overlap 0.25, batch 8) through :class:`mobileseg.engine.predictor.Predictor` and prints the wall time and
the process's peak resident memory (``ru_maxrss``), beside what the image's uint8 pixels and a float32 copy of all
its probabilities would cost. Above ``STREAM_PIXELS`` the predictor streams row bands to a uint8 class map, so the
peak should stay near a few uint8 copies of the image, far below the float32 probabilities.

Run:  python benchmarks/slide_memory.py --size 8000     (4000 takes about a quarter of the time)
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from mobileseg.engine.inference_mode import InferenceSettings
from mobileseg.engine.predictor import Predictor
from mobileseg.errors import run_script
from mobileseg.models import Segmenter
from mobileseg.models.model_file import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8000, help="image side in pixels")
    parser.add_argument("--window", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stream-pixels", type=int, default=4_000_000, help="stream images above this many pixels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = Segmenter(num_classes=3, encoder_weights=None, width_mult=0.35).to_checkpoint(imgsz=(args.window,) * 2)
    model, info, _ = load_model(ckpt)
    settings = InferenceSettings(
        infer="slide", window=(args.window, args.window), batch=8, stream_pixels=args.stream_pixels
    )
    predictor = Predictor(model, info, settings=settings)
    image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = predictor.predict_image(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pixels = args.size * args.size
    print(
        f"{args.size}x{args.size} ({pixels / 1e6:.0f} MP), window {args.window}, {args.threads} thread(s): "
        f"{seconds:.0f} s; peak RSS {peak:.0f} MiB (before predicting {before:.0f} MiB); "
        f"streamed: {result.probs.size == 0}; for scale: uint8 image {3 * pixels / 2**20:.0f} MiB, "
        f"float32 probabilities {info.num_classes * 4 * pixels / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    sys.exit(run_script(main))
