"""Guards against pathological training-step paths, measured relative to this machine (no absolute timings).

Failure modes seen here: oversubscribed threads, and PyTorch's NCHW ConvTranspose2d on the CPU, which with 2
threads ran a step 3x (batch 4) to 10x (batch 8) slower than with 1 thread, while the NHWC path the model uses
is as fast or faster with 2. The step runs in the precision training uses here (bf16 autocast on CPUs with
bf16 units, else fp32). The guard compares the step at the configured threads with the same step on one
thread, in the same process, so a slow or busy machine does not fail it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mobileseg.engine.loss import SegmentationLoss
from mobileseg.engine.runtime import cpu_has_native_bf16, setup_threads
from mobileseg.models import Segmenter

SIZE, BATCH = 224, 4

# Timed against the machine's cores / one process per core: run alone after the parallel pass (make test).
pytestmark = pytest.mark.serial


def _step_seconds(model: Segmenter, repeats: int = 3) -> float:
    x = torch.rand(BATCH, 3, SIZE, SIZE)
    y = (torch.rand(BATCH, SIZE, SIZE) > 0.5).long()
    loss_fn = SegmentationLoss(1)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    model.train()

    amp = cpu_has_native_bf16()  # the precision mobileseg train uses on this CPU

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        opt.step()

    step()  # warm-up: allocator, kernel selection
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _measure() -> None:
    """Run in a fresh process (thread pools can be sized only once): print 1-thread and configured step times."""
    torch.set_num_threads(1)
    model = Segmenter(1)  # fed plain NCHW input, as users do
    single = _step_seconds(model)
    threads = setup_threads(None)  # exactly what every mobileseg command does at start-up
    configured = _step_seconds(model)
    print(json.dumps({"single": single, "configured": configured, "threads": threads}))


def test_configured_threads_not_slower_than_one_thread():
    code = "import sys; sys.path.insert(0, sys.argv[1]); import test_speed_guard as t; t._measure()"
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # A healthy configuration is at worst a little slower (other processes sharing the cores), usually faster.
    assert r["configured"] < 2.0 * r["single"], r


def test_model_runs_nhwc_weights():
    # The NCHW ConvTranspose2d path is the one that collapses with 2 threads (3-10x slower per step here).
    model = Segmenter(1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
