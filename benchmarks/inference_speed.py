"""Reproduce the inference-speed figures of a trained checkpoint (the pets model) and check the targets.

Steps: export fp32 + int8 ONNX next to the checkpoint (parity-checked; int8 calibrated on training images, its
IoU change measured on the test split), then ``mobileseg benchmark`` (PyTorch eager / channels_last, ONNX Runtime
fp32 / int8, same thread count for all), then the verdict:

* ONNX Runtime fp32 batch-8 images/s >= 1.5x PyTorch eager (same model, same run);
* ONNX Runtime int8 faster than fp32;
* int8 IoU change on the test split >= -0.01;
* beside the TensorFlow tutorial's Keras model (``keras_tutorial_step.py --infer-only`` in ``.bench/tfenv``, float32
  and ``mixed_bfloat16``, same threads and batch; ``--skip-keras`` leaves it out): a ``.pt`` in the precision
  predict/val/test use by default >= 1.3x Keras' faster precision, ONNX Runtime int8 >= 2.5x; with
  ``--compile`` also the ``compile=true`` path (``torch.compile``) against the same 1.3x.

Usage::

    python benchmarks/inference_speed.py runs/train/pets/weights/best.pt
    python benchmarks/inference_speed.py best.pt --data ../shared/data/oxford_pets --threads 2 --runs 30

Exit status 0 when every target is met, 1 otherwise; ``inference_speed.json`` lands beside ``benchmark.csv``.
A busy machine distorts the figures: the table shows the 1-minute load average so a reader can judge.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

FP32_TARGET = 1.5  # ORT fp32 / PyTorch eager, batch-8 images/s
IOU_LOSS_TARGET = 0.01
PT_VS_KERAS = 1.3  # the .pt path (default precision) / Keras' faster inference
INT8_VS_KERAS = 2.5
ROOT = Path(__file__).resolve().parents[1]


def keras_inference(tf_python: Path, threads: int, batch: int, size: int, precision: str) -> dict[str, Any]:
    """The Keras tutorial model's batch inference images/s, in its own process and environment."""
    from keras_env import run_keras  # same folder

    args = ["--threads", str(threads), "--batch", str(batch), "--size", str(size), "--steps", "10"]
    return run_keras(tf_python, "--infer-only", *args, "--precision", precision)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path, help="trained checkpoint (best.pt)")
    p.add_argument("--data", help="dataset location if it moved since training (the split is kept)")
    p.add_argument("--preset", help="dataset preset, with --data")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and ORT (default: the cores)")
    p.add_argument("--batch", type=int, default=8, help="batch of the throughput figure")
    p.add_argument("--runs", type=int, default=20, help="timed batch-1 runs (batch-N uses half as many)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--calib-images", type=int, default=32, help="int8 calibration images (training split)")
    p.add_argument("--project", default="runs", help="root of run folders")
    p.add_argument("--compile", action="store_true", help="also time the compile=true path (PyTorch compiled row)")
    p.add_argument("--tf-python", type=Path, default=ROOT / ".bench" / "tfenv" / "bin" / "python")
    p.add_argument("--skip-keras", action="store_true", help="no Keras rows")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mobileseg

    if not args.weights.is_file():
        print(f"checkpoint not found: {args.weights}", file=sys.stderr)
        return 2
    common: dict[str, Any] = {"weights": str(args.weights), "batch": args.batch, "project": args.project}
    if args.threads:
        common["threads"] = args.threads
    if args.data:
        common["data"] = args.data
    if args.preset:
        common["preset"] = args.preset
    exported = mobileseg.export(int8=True, calib_images=args.calib_images, **common)
    print()
    bench = mobileseg.benchmark(warmup=args.warmup, runs=args.runs, compile=args.compile, **common)
    int8 = exported.int8

    fp32_ratio = bench.speedup("ONNX Runtime fp32")
    int8_row, fp32_row = bench.row("ONNX Runtime int8"), bench.row("ONNX Runtime fp32")
    int8_vs_fp32 = int8_row.images_s / fp32_row.images_s if int8_row and fp32_row else math.nan
    iou_change = int8.iou_change if int8 else math.nan
    checks = {
        f"ORT fp32 >= {FP32_TARGET}x PyTorch eager (batch {args.batch})": (fp32_ratio, fp32_ratio >= FP32_TARGET),
        "ORT int8 faster than ORT fp32": (int8_vs_fp32, int8_vs_fp32 > 1.0),
        f"int8 IoU change on {int8.split if int8 else 'test'} >= -{IOU_LOSS_TARGET}": (
            iou_change,
            iou_change >= -IOU_LOSS_TARGET,
        ),
    }
    if not args.skip_keras:
        size = bench.imgsz[0]
        keras = {
            prec: keras_inference(args.tf_python, bench.threads, bench.batch, size, prec)["infer_img_s"]
            for prec in ("float32", "mixed_bfloat16")
        }
        best_prec = max(keras, key=keras.__getitem__)
        print(
            f"\nKeras tutorial model, batch {bench.batch}, {size} px: "
            + ", ".join(f"{p} {v:.1f} images/s" for p, v in keras.items())
        )
        # the .pt path's default precision: the bf16 row where this CPU has bf16 units (else it is a skipped row)
        pt_row = next(
            (r for r in map(bench.row, ("PyTorch bf16", "PyTorch eager")) if r and not math.isnan(r.images_s)), None
        )
        pt = pt_row.images_s / keras[best_prec] if pt_row else math.nan
        i8 = int8_row.images_s / keras[best_prec] if int8_row else math.nan
        checks[f".pt ({pt_row.backend if pt_row else '?'}) >= {PT_VS_KERAS}x Keras {best_prec}"] = (
            pt,
            pt >= PT_VS_KERAS,
        )
        compiled = bench.row("PyTorch compiled")
        if compiled is not None and not math.isnan(compiled.images_s):  # --compile: the compile=true path
            pc = compiled.images_s / keras[best_prec]
            checks[f".pt with compile=true >= {PT_VS_KERAS}x Keras {best_prec}"] = (pc, pc >= PT_VS_KERAS)
        checks[f"ORT int8 >= {INT8_VS_KERAS}x Keras {best_prec}"] = (i8, i8 >= INT8_VS_KERAS)
        keras_rows = {"keras_infer_img_s": keras}
    else:
        keras_rows = {}
    if max(bench.load) > bench.threads:
        print(
            f"\nnote: load average {max(bench.load):.1f} > {bench.threads} threads: other processes shared the "
            f"cores, so absolute figures are low (backends were timed interleaved, so ratios hold better)"
        )
    print("\ntargets:")
    for name, (value, ok) in checks.items():
        print(
            f"  {'PASS' if ok else 'FAIL'}  {name}: {value:+.4f}"
            if "IoU" in name
            else f"  {'PASS' if ok else 'FAIL'}  {name}: {value:.2f}x"
        )
    summary = {
        "weights": str(args.weights),
        "cpu": bench.cpu,
        "threads": bench.threads,
        "imgsz": list(bench.imgsz),
        "batch": bench.batch,
        "load_average": list(bench.load),
        "rows": [r.__dict__ for r in bench.rows],
        "parity": exported.parity.__dict__,
        "int8": {k: (str(v) if isinstance(v, Path) else v) for k, v in int8.__dict__.items()} if int8 else None,
        "checks": {name: {"value": value, "ok": bool(ok)} for name, (value, ok) in checks.items()},
        **keras_rows,
    }
    path = bench.save_dir / "inference_speed.json"
    path.write_text(json.dumps(summary, indent=2, default=float))
    print(f"\nSummary saved to {path}")
    return 0 if all(ok for _, ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
