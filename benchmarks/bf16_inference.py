"""Is bf16 autocast faster than fp32 for *inference* of the default model on this CPU? (issue #20)

Times Segmenter(1) and Segmenter(12) (default refine decoder, random weights: speed does not depend on them),
eval mode, ``torch.inference_mode``, channels_last (as the Segmenter runs inside), at 224x224 and 352x480, batch 1
and 8, fp32 against ``torch.autocast("cpu", dtype=torch.bfloat16)`` (logits cast back to float32, as the
Predictor does). The two precisions are timed round-robin (:func:`mobileseg.timing.measure_interleaved`), so a
busy core slows both alike and the ratio stays meaningful. Also prints the largest probability difference bf16 makes.

Usage (one thread on core 1, what the README figures were measured with)::

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bf16_inference.py --runs 7
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from mobileseg.engine.runtime import cpu_has_native_bf16
from mobileseg.errors import run_script
from mobileseg.models import Segmenter
from mobileseg.timing import Candidate, load_average, measure_interleaved


def forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Logits in float32, the forward under bf16 autocast or not."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        return model(x).float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="timed runs per precision and shape")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fmt = torch.channels_last  # what the Segmenter runs inside anyway (models/segmenter.py), whatever the input
    print(f"native bf16: {cpu_has_native_bf16()}, {args.threads} thread(s), {fmt}, load average {load_average():.1f}")
    print(f"{'classes':>7} {'size':>8} {'batch':>5} {'fp32 ms':>9} {'bf16 ms':>9} {'speed-up':>8} {'max |dp|':>9}")
    for classes in (1, 12):
        model = Segmenter(classes).eval().to(memory_format=fmt)
        for h, w in ((224, 224), (352, 480)):
            for n in (1, 8):
                x = torch.rand(n, 3, h, w).contiguous(memory_format=fmt)
                with torch.inference_mode():
                    run = {b: (lambda b=b, m=model, x=x: forward(m, x, b)) for b in (False, True)}
                    rows = measure_interleaved(
                        [Candidate("fp32", run[False], run[False]), Candidate("bf16", run[True], run[True])],
                        batch=n, warmup=args.warmup, runs=args.runs, batch_runs=1,
                    )  # fmt: skip
                    act = torch.sigmoid if classes == 1 else (lambda t: t.softmax(1))
                    dp = (act(run[True]()) - act(run[False]())).abs().max().item()
                fp32, bf16 = (r.latency_ms for r in rows)
                print(f"{classes:>7} {h}x{w:>4} {n:>5} {fp32:>9.1f} {bf16:>9.1f} {fp32 / bf16:>7.2f}x {dp:>9.4f}")


if __name__ == "__main__":
    sys.exit(run_script(main))
