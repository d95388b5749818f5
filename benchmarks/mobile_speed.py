"""Batch-1 latency and file size of every backend in one run: PyTorch eager, ONNX Runtime fp32 / int8, ExecuTorch
fp32 / int8 and LiteRT fp32 / int8.

Measured with the desktop builds of the phone runtimes (same XNNPACK kernels, x86 instead of ARM), so the
*ratios* say what to expect on a phone, the milliseconds do not. Every export is parity-checked as it is written.

Usage::

    python benchmarks/mobile_speed.py                        # random-init Segmenter(1), 224x224
    python benchmarks/mobile_speed.py runs/train/pets/weights/best.pt --threads 2 --runs 30

Without a checkpoint the model is random-init (head scaled to a trained model's logit range) and int8 is
calibrated and checked on noise: fine for speed, meaningless for accuracy. With one, pass ``--calib`` a folder of
typical images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mobileseg.errors import run_script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, nargs="?", help="checkpoint (best.pt); default a random-init Segmenter")
    p.add_argument("--imgsz", type=int, default=224, help="input size of the random-init model")
    p.add_argument("--classes", type=int, default=1, help="classes of the random-init model (1 = binary)")
    p.add_argument("--calib", help="folder of calibration images for int8 (default: noise)")
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch, ExecuTorch and LiteRT")
    p.add_argument("--runs", type=int, default=20, help="timed batch-1 runs per backend")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path, help="keep the exported files here (default: a temporary folder)")
    p.add_argument(
        "--only",
        nargs="*",
        default=["onnx-fp32", "onnx-int8", "et-fp32", "et-int8", "tflite-fp32", "tflite-int8"],
    )
    p.add_argument("--reuse", action="store_true", help="use files already in --out (skips export and parity)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mobileseg.deploy.executorch import export_executorch
    from mobileseg.deploy.int8 import quantize_int8
    from mobileseg.deploy.litert import export_tflite
    from mobileseg.deploy.onnx import export_onnx
    from mobileseg.deploy.phone_runtimes import ExecutorchBackend, LiteRTBackend
    from mobileseg.deploy.rewrites import fold_batchnorm
    from mobileseg.deploy.runtimes import OnnxBackend, quiet
    from mobileseg.deploy.samples import noise_images, source_images
    from mobileseg.models import Segmenter
    from mobileseg.models.model_file import ModelInfo, load_model
    from mobileseg.timing import Candidate, load_average, measure_interleaved

    torch.set_num_threads(args.threads)
    if args.weights:
        model, info, _ = load_model(args.weights)
    else:
        torch.manual_seed(0)
        model = Segmenter(args.classes, encoder_weights=None).eval()
        with torch.no_grad():  # random-init logits are ~0.05: scale the head to a trained model's range, or int8
            model.decoder.head.weight.mul_(60)  # rounding flips most pixels and the 97 % agreement check fails
        info = ModelInfo.build(None, (args.imgsz, args.imgsz), args.classes == 1, args.classes)
    calib = (source_images(args.calib, info.imgsz, 32) if args.calib else None) or noise_images(info.imgsz, 8)
    x = torch.rand(1, 3, *info.imgsz, generator=torch.Generator().manual_seed(1))

    folder = args.out or Path(tempfile.mkdtemp(prefix="mobileseg-mobile-"))
    folder.mkdir(parents=True, exist_ok=True)

    def onnx_fp32(model, path, info, **_):  # type: ignore[no-untyped-def]
        with quiet():
            export_onnx(fold_batchnorm(model), path, info)

    def onnx_int8(model, path, info, calib_images, **_):  # type: ignore[no-untyped-def]
        quantize_int8(model, path, calib_images, info)

    def et_all(*a, **k):  # type: ignore[no-untyped-def]
        return export_executorch(*a, **k, float_layers=[])

    def ort(path, threads):  # type: ignore[no-untyped-def]
        backend = OnnxBackend(path, threads)
        backend.run_one = backend  # same call shape as the phone backends
        return backend

    plans = {
        "onnx-fp32": ("ONNX Runtime fp32", onnx_fp32, ort, ".onnx", False),
        "onnx-int8": ("ONNX Runtime int8", onnx_int8, ort, ".int8.onnx", True),
        "et-fp32": ("ExecuTorch fp32", export_executorch, ExecutorchBackend, ".pte", False),
        "et-int8": ("ExecuTorch int8", export_executorch, ExecutorchBackend, ".int8.pte", True),
        # every layer int8 (int8_float_layers= empty): what the default's two float blocks cost in speed
        "et-int8-all": ("ExecuTorch int8 all", et_all, ExecutorchBackend, ".int8all.pte", True),
        "tflite-fp32": ("LiteRT fp32", export_tflite, LiteRTBackend, ".tflite", False),
        "tflite-int8": ("LiteRT int8", export_tflite, LiteRTBackend, ".int8.tflite", True),
    }
    # PyTorch first, alone: once an ExecuTorch or LiteRT thread pool exists, its XNNPACK workers spin between
    # calls and, interleaved on 2 cores, made eager ~10x slower (505 ms vs 54 ms); the runtimes are then timed
    # round-robin among themselves.
    with torch.inference_mode():
        eager = Candidate("PyTorch eager", lambda: model(x), lambda: model(x))
        rows = measure_interleaved([eager], 1, args.warmup, args.runs, batch_runs=1)
    candidates = []
    sizes: dict[str, float] = {}
    export_s: dict[str, float] = {}
    for key in args.only:
        name, export, backend_cls, suffix, int8 = plans[key]
        path = folder / f"model{suffix}"
        start = time.perf_counter()
        if not (args.reuse and path.is_file()):
            if key.startswith("onnx"):
                export(model, path, info, calib_images=calib.images)
            else:
                export(model, path, info, int8=int8, calib_images=calib.images, threads=args.threads, log=print)
            export_s[name] = time.perf_counter() - start
        sizes[name] = path.stat().st_size / 1e6
        backend = backend_cls(path, args.threads)
        candidates.append(Candidate(name, lambda b=backend: b.run_one(x), lambda b=backend: b.run_one(x)))
    with torch.inference_mode():
        rows += measure_interleaved(candidates, 1, args.warmup, args.runs, batch_runs=1)
    print(
        f"\n{info.imgsz[0]}x{info.imgsz[1]}, {info.out_channels} output channel(s), {args.threads} threads, "
        f"load average {load_average():.1f}"
    )
    print(f"{'backend':<18}{'median ms':>10}{'p90 ms':>9}{'size MB':>9}{'export s':>10}")
    for row in rows:
        size, seconds = sizes.get(row.backend, float("nan")), export_s.get(row.backend, float("nan"))
        print(f"{row.backend:<18}{row.latency_ms:>10.1f}{row.latency_p90_ms:>9.1f}{size:>9.1f}{seconds:>10.0f}")
    result = {
        r.backend: {"median_ms": r.latency_ms, "p90_ms": r.latency_p90_ms, "size_mb": sizes.get(r.backend)}
        for r in rows
    }
    (folder / "mobile_speed.json").write_text(json.dumps(result, indent=2))
    print(f"files and mobile_speed.json in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
