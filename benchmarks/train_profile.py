"""Where a training step spends its time: the operator profile of one decoder setting, and the encoder's share.

The step is the one every training-speed lever is measured on (``train_levers.py``: forward + loss + backward +
AdamW on a fixed batch of 8 x 224 x 224, binary), in the precision ``mobileseg train`` picks on this CPU. Printed:

1. images/s of the step for each decoder setting given, and of an "encoder floor" (the same encoder with a 1x1
   conv head instead of a decoder), so the decoder's share of the step reads as the difference;
2. the torch.profiler table (self CPU time, grouped by operator and input shape) of the first setting's step:
   which convolutions (forward ``mkldnn_convolution``, backward ``convolution_backward``) cost the most.

    .venv/bin/python benchmarks/train_profile.py                              # the default decoder
    .venv/bin/python benchmarks/train_profile.py "" "decoder_channels=256,128,64,32" "decoder=tutorial"

Each positional argument is one setting: space-separated ``key=value`` model keys (``""`` = the defaults).
"""

from __future__ import annotations

import argparse
import functools
import sys

import torch
from torch import nn
from train_levers import make_step, measure  # same folder: the step every lever is measured on

from mobileseg.config import load_config
from mobileseg.engine.runtime import cpu_has_native_bf16, setup_threads
from mobileseg.errors import run_script
from mobileseg.models import Segmenter


class EncoderFloor(nn.Module):
    """A 1x1 conv head on the deepest feature, upsampled to the input: the step without a decoder."""

    def __init__(self, channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels[-1], num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        h, w = features[0].shape[-2:]
        return nn.functional.interpolate(self.head(features[-1]), size=(2 * h, 2 * w), mode="bilinear")


def build(setting: str) -> Segmenter:
    if setting == "floor":
        model = Segmenter(1)
        model.decoder = EncoderFloor(model.encoder.out_channels, 1)
        return model.to(memory_format=torch.channels_last)
    cfg = load_config(overrides=[*setting.split(), "encoder_weights=none"])
    return Segmenter.from_config(cfg.model, num_classes=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="*", default=[""], help='model keys per setting, e.g. "decoder=tutorial"')
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rows", type=int, default=15, help="rows of the operator table")
    args = ap.parse_args()
    threads = setup_threads(None)
    amp = cpu_has_native_bf16()
    print(f"torch {torch.__version__}, {threads} threads, {'bf16 autocast' if amp else 'fp32'}, batch {args.batch}")
    lever = "bf16" if amp else "fp32"

    def rate(setting: str, steps: int) -> float:
        return measure(lever, args.batch, args.size, steps, 3, functools.partial(build, setting))[0]

    rate("", 2)  # warm the allocator and oneDNN
    floor = rate("floor", args.steps)
    print(f"{'encoder floor (1x1 head, no decoder)':<48}{floor:7.2f} img/s  {args.batch / floor * 1e3:7.0f} ms/step")
    for setting in args.settings:
        speed = rate(setting, args.steps)
        ms, floor_ms = args.batch / speed * 1e3, args.batch / floor * 1e3
        info = build(setting).summary((args.size, args.size))
        print(
            f"{setting or 'defaults':<48}{speed:7.2f} img/s  {ms:7.0f} ms/step  decoder {ms - floor_ms:5.0f} ms "
            f"({(ms - floor_ms) / ms:.0%})  {info['params'] / 1e6:.2f} M params  {info['gflops']:.2f} GFLOPs"
        )
    step = make_step(lever, args.batch, args.size, functools.partial(build, args.settings[0]))
    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            step()
    print(f"\nprofile of '{args.settings[0] or 'defaults'}', 3 steps, by self CPU time:")
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=30, max_shapes_column_width=70
    )
    print(table)


if __name__ == "__main__":
    sys.exit(run_script(main))
