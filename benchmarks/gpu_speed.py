"""Inference speed of a checkpoint on a CUDA GPU: PyTorch fp32 / bf16 / fp16 autocast, channels_last, and ONNX
Runtime's CUDA provider where the installed onnxruntime has it.

`mobileseg benchmark` times the CPU backends (what a 2-core machine runs); this is its GPU counterpart, run once
on a lent H200 (see the README's "On a GPU" section). Timings use CUDA events around whole batches, after warm-up,
with the input already on the GPU (what a server that batches requests sees), and once more including the
host-to-device copy of a CPU batch (what `mobileseg predict` does per batch).

    python benchmarks/gpu_speed.py runs/train/pets_cuda/weights/best.pt --batch 1 32 --out gpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from mobileseg.errors import run_script
from mobileseg.models.model_file import load_model


def time_cuda(fn, warmup: int = 10, runs: int = 50) -> float:
    """Median milliseconds of ``fn()`` over ``runs`` calls, each timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def forward(net: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """One inference call as TorchBackend makes it: autocast when ``dtype`` is set, float32 logits out."""
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        return net(x).float()


def torch_rows(model: torch.nn.Module, imgsz: tuple[int, int], batches: list[int]) -> list[dict]:
    rows = []
    variants = [
        ("PyTorch fp32", None, False),
        ("PyTorch fp32 channels_last", None, True),
        ("PyTorch bf16 autocast", torch.bfloat16, False),
        ("PyTorch bf16 autocast channels_last", torch.bfloat16, True),
        ("PyTorch fp16 autocast", torch.float16, False),
    ]
    for name, dtype, cl in variants:
        fmt = torch.channels_last if cl else torch.contiguous_format
        net = model.to("cuda", memory_format=fmt).eval()
        for b in batches:
            x = torch.rand(b, 3, *imgsz, device="cuda").contiguous(memory_format=fmt)
            host = torch.rand(b, 3, *imgsz).pin_memory()

            ms = time_cuda(lambda net=net, x=x, dtype=dtype: forward(net, x, dtype))
            ms_copy = time_cuda(
                lambda net=net, host=host, fmt=fmt, dtype=dtype: forward(
                    net, host.to("cuda", non_blocking=True).contiguous(memory_format=fmt), dtype
                )
            )
            rows.append(
                {
                    "backend": name,
                    "batch": b,
                    "ms": round(ms, 3),
                    "images_per_s": round(b * 1000 / ms, 1),
                    "images_per_s_with_copy": round(b * 1000 / ms_copy, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def onnx_rows(model: torch.nn.Module, imgsz: tuple[int, int], batches: list[int], info) -> list[dict]:
    import numpy as np
    import onnxruntime as ort

    from mobileseg.deploy.onnx import export_onnx
    from mobileseg.deploy.rewrites import fold_batchnorm
    from mobileseg.deploy.runtimes import ort_session

    providers = ort.get_available_providers()
    print("onnxruntime", ort.__version__, "providers:", providers, flush=True)
    if "CUDAExecutionProvider" not in providers:
        return [{"backend": "ONNX Runtime CUDA", "note": f"not in this onnxruntime build ({providers})"}]
    net = fold_batchnorm(model)  # a folded copy on the CPU, in eval mode, as export_onnx wants it
    path, _ = export_onnx(net, Path(tempfile.mkdtemp()) / "m.onnx", info)
    sess = ort_session(path, device="cuda")  # what val/test/predict/serve open for an .onnx with device=cuda
    name = sess.get_inputs()[0].name
    rows = []
    for b in batches:
        x = np.random.rand(b, 3, *imgsz).astype(np.float32)
        ms = time_cuda(lambda x=x: sess.run(None, {name: x}))
        rows.append(
            {
                "backend": "ONNX Runtime CUDA fp32 (numpy in/out)",
                "batch": b,
                "ms": round(ms, 3),
                "images_per_s": round(b * 1000 / ms, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--out", default="gpu_speed.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_speed.py: no CUDA GPU here (mobileseg benchmark times the CPU backends)")
    torch.backends.cudnn.benchmark = True
    model, info, _ = load_model(args.weights)  # a missing or corrupt file: run_script prints its one line
    imgsz = tuple(info.imgsz)
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "imgsz": imgsz}
    result["rows"] = torch_rows(model, imgsz, args.batch)
    try:
        result["rows"] += onnx_rows(model, imgsz, args.batch, info)
    except Exception as e:  # an optional backend: record why it did not run, keep the PyTorch rows
        result["rows"].append({"backend": "ONNX Runtime CUDA", "note": f"{type(e).__name__}: {e}"[:300]})
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("written", args.out)


if __name__ == "__main__":
    sys.exit(run_script(main))
