"""Each training-speed lever of issue #6, measured on its own against the same baseline step.

A "step" is forward + loss + backward + optimizer step of the pets model (MobileNetV2 + pix2pix, binary) on a fixed
batch (default 8 x 224 x 224), images/s from the median of timed steps after warm-up, every variant in its own
fresh model with the same seed. What each lever does to the math is printed beside it: only "same math" levers
may be kept without re-checking the pets test IoU (issue #6: within 0.005).

    .venv/bin/python benchmarks/train_levers.py                 # all levers
    .venv/bin/python benchmarks/train_levers.py --only fp32 bf16 compile

Levers measured elsewhere: channels_last (the model is NHWC inside, see models/segmenter.py), DataLoader workers
and the RAM cache (train_speed.py measures the data pipeline), OMP_WAIT_POLICY (a property of the whole process:
run ``OMP_WAIT_POLICY=PASSIVE python benchmarks/train_levers.py --only fp32``), BatchNorm fusion (inference
only: ``mobileseg export`` folds BN).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.runtime import cpu_has_native_bf16, setup_threads
from mobileseg.errors import run_script
from mobileseg.models import Segmenter

LEVERS: dict[str, str] = {
    "fp32": "baseline: fp32, AdamW defaults (a per-parameter loop on the CPU)",
    "bf16": "bf16 autocast forward (changes the math: kept, pets test IoU checked)",
    "fused": "AdamW(fused=True) (same math)",
    "foreach": "AdamW(foreach=True) (same math)",
    "bf16+fused": "bf16 autocast and AdamW(fused=True)",
    "frozen": "encoder frozen (changes training: an option, freeze_encoder / freeze_encoder_epochs)",
    "bf16+frozen": "both (changes the math and training)",
    "compile": "torch.compile(model), inductor (same math up to fusion rounding; compile time reported)",
    "bf16+compile": "bf16 autocast and torch.compile",
}


def make_step(
    lever: str, batch: int, size: int, build: Callable[[], Segmenter] = lambda: Segmenter(1)
) -> Callable[[], None]:
    """One step closure on a fresh binary model from ``build`` (seeded), with the lever applied."""
    torch.manual_seed(0)
    model = build().train()
    if "frozen" in lever:
        model.set_encoder_frozen(True)
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"fused": True} if lever.endswith("fused") else {"foreach": True} if lever == "foreach" else {}
    opt = torch.optim.AdamW(params, 1e-3, **kwargs)
    net: torch.nn.Module = torch.compile(model) if lever.endswith("compile") else model  # type: ignore[assignment]
    loss_fn = SegmentationLoss(1)
    amp = lever.startswith("bf16")
    x = torch.rand(batch, 3, size, size)
    y = (torch.rand(batch, size, size) > 0.5).long()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
        loss_fn(logits.float(), y).backward()
        opt.step()

    return step


def measure(
    lever: str, batch: int, size: int, steps: int, warmup: int, build: Callable[[], Segmenter] = lambda: Segmenter(1)
) -> tuple[float, float]:
    """(images/s, seconds of the first step): the first step holds torch.compile's compile time."""
    step = make_step(lever, batch, size, build)
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times), first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(LEVERS), help="levers to measure (default: all)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    threads = setup_threads(None)
    print(
        f"{torch.__version__}, {threads} threads, batch {args.batch}, {args.size} px, CPU bf16 units: "
        f"{cpu_has_native_bf16()}"
    )
    # The first model trained in a process measures 10-20 % slow (allocator and oneDNN caches warming up),
    # whichever lever it is: one throwaway round keeps that out of the table.
    measure("fp32", args.batch, args.size, 3, 2)
    base = None
    for lever in args.only or list(LEVERS):
        if lever.startswith("bf16") and not cpu_has_native_bf16():
            print(f"{lever:<12} skipped: this CPU has no bf16 units (PyTorch would emulate bf16)")
            continue
        try:
            rate, first = measure(lever, args.batch, args.size, args.steps, args.warmup)
        except Exception as e:  # e.g. torch.compile without a working C++ compiler
            print(f"{lever:<12} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            continue
        base = base or rate
        print(f"{lever:<12} {rate:6.2f} img/s  {rate / base:5.2f}x  first step {first:6.1f} s   {LEVERS[lever]}")


if __name__ == "__main__":
    sys.exit(run_script(main))
