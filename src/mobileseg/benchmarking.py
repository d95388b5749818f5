"""Inference speed of a model on this machine: PyTorch eager / channels_last / bf16, ONNX Runtime fp32 / int8.

For each backend: batch-1 latency (median and 90th percentile over ``runs`` timed runs, after ``warmup``
untimed ones) and batch-N throughput (N = ``batch``) in images/s. PyTorch and ONNX Runtime get the same number
of intra-op threads (``threads``, default: the cores this process may use), so the comparison is fair, and the
CPU model and thread count are printed with the table. Results go to ``runs/benchmark/expN/benchmark.csv``.

The ``PyTorch bf16`` row is the checkpoint under bf16 autocast (:class:`TorchBackend`), what val/test/predict/serve
run on a CPU with bf16 units (AVX512-BF16/AMX) unless ``amp=false``; elsewhere (or with
``amp=false``) it is skipped with the reason, since those commands then run fp32 (the eager row). With
``compile=true`` a ``PyTorch compiled`` row times the same model through ``torch.compile`` (compiled before
timing; the compilation time is in the notes).

The ONNX models are the ones beside the weights (``best.onnx``, ``best.int8.onnx``) when they are newer than
the checkpoint and, for int8, were quantized with the ``int8_reduce_range`` / ``int8_float_layers`` asked for
(recorded in the file); otherwise they are exported to a temporary folder (int8 calibrated on training images;
skipped with a message when no dataset is reachable), with a note saying why.

Example:
    >>> result = mobileseg.benchmark(weights="runs/train/exp/weights/best.pt")  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mobileseg.config import Config, resolve_config
from mobileseg.deploy.int8 import int8_path_for, quantize_int8, settings_differ
from mobileseg.deploy.onnx import export_onnx, read_onnx_metadata
from mobileseg.deploy.rewrites import fold_batchnorm
from mobileseg.deploy.runtimes import OnnxBackend, TorchBackend, quiet
from mobileseg.deploy.samples import open_dataset, source_images, split_images
from mobileseg.engine.predictor import warn
from mobileseg.engine.runtime import cpu_has_native_bf16, increment_path, setup_threads
from mobileseg.errors import ConfigError, MissingFileError
from mobileseg.models.hub import check_model_path
from mobileseg.models.model_file import ModelInfo, load_model
from mobileseg.timing import BenchmarkRow, Candidate, cpu_model, load_average, measure_interleaved

WARMUP = 3  # untimed runs first: allocator, thread pools and ORT's kernel selection settle in the first calls
RUNS = 20  # timed runs per measurement


@dataclass
class BenchmarkResult:
    """All rows plus the conditions they were measured under."""

    rows: list[BenchmarkRow]
    save_dir: Path
    threads: int
    cpu: str
    imgsz: tuple[int, int]
    batch: int
    weights: str = ""
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before and after the timing

    def row(self, backend: str) -> BenchmarkRow | None:
        return next((r for r in self.rows if r.backend == backend), None)

    def speedup(self, backend: str, reference: str = "PyTorch eager") -> float:
        """Batch throughput of ``backend`` relative to ``reference`` (NaN if either is missing)."""
        a, b = self.row(backend), self.row(reference)
        return a.images_s / b.images_s if a and b and b.images_s > 0 else math.nan

    def table(self) -> str:
        head = f"{'backend':<24}{'b1 median ms':>14}{'b1 p90 ms':>11}{f'b{self.batch} img/s':>12}{'vs eager':>10}"
        lines = [
            f"{self.cpu}, {self.threads} threads (torch and ORT), input {self.imgsz[0]}x{self.imgsz[1]}, "
            f"load average {self.load[0]:.1f} -> {self.load[1]:.1f} (busy if above {self.threads})",
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            if math.isnan(r.images_s) and math.isnan(r.latency_ms):
                lines.append(f"{r.backend:<24}  skipped: {r.note}")
                continue
            ratio = self.speedup(r.backend)
            ratio_text = f"{ratio:.2f}x" if not math.isnan(ratio) else "-"
            lines.append(
                f"{r.backend:<24}{r.latency_ms:>14.1f}{r.latency_p90_ms:>11.1f}{r.images_s:>12.1f}{ratio_text:>10}"
                + (f"  {r.note}" if r.note else "")
            )
        return "\n".join(lines)

    def write_csv(self, path: Path) -> Path:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "backend",
                    "latency_ms_median",
                    "latency_ms_p90",
                    f"images_per_s_batch{self.batch}",
                    "speedup_vs_eager",
                    "threads",
                    "imgsz",
                    "batch",
                    "cpu",
                    "load_avg_1min",
                    "note",
                ]
            )
            for r in self.rows:
                w.writerow(
                    [
                        r.backend,
                        f"{r.latency_ms:.3f}",
                        f"{r.latency_p90_ms:.3f}",
                        f"{r.images_s:.3f}",
                        f"{self.speedup(r.backend):.3f}",
                        self.threads,
                        f"{self.imgsz[0]}x{self.imgsz[1]}",
                        self.batch,
                        self.cpu,
                        f"{max(self.load):.2f}",
                        r.note,
                    ]
                )
        return path


def _fresh(candidate: Path, weights: Path) -> bool:
    """An export beside the checkpoint is used only if it is newer (else it may hold other weights)."""
    return candidate.is_file() and (not weights.is_file() or candidate.stat().st_mtime >= weights.stat().st_mtime)


def benchmark(
    cfg: Config | dict[str, Any] | str | None = None,
    *,
    warmup: int = WARMUP,
    runs: int = RUNS,
    **overrides: Any,
) -> BenchmarkResult:
    """Measure inference speed of ``weights`` (a checkpoint, or an ``.onnx`` for the ONNX Runtime rows only).

    Args:
        cfg: config, YAML path or dict; ``batch`` sets N, ``threads`` the thread count, ``int8`` is not needed
            (int8 is always attempted).
        warmup: untimed runs (batch 1 and batch N) of each backend before timing.
        runs: timed batch-1 runs per backend (batch N: half of them, at least 3); backends are timed
            round-robin, see :func:`measure_interleaved`.
    """
    cfg = resolve_config(cfg, overrides)
    rt = cfg.runtime
    if not rt.weights:
        raise ConfigError("no model given: pass weights=<best.pt or model.onnx>")
    weights = check_model_path(rt.weights)
    if not weights.is_file():
        raise MissingFileError(f"{weights} is a pretrained folder: benchmark times a checkpoint (best.pt)")
    log = print if rt.verbose else (lambda *a, **k: None)

    threads = setup_threads(rt.threads)
    batch = cfg.train.batch
    cpu = cpu_model()
    if rt.device not in ("auto", "cpu"):
        warn(f"benchmark measures the CPU (device={rt.device} is ignored), where PyTorch and ORT compare directly")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mobileseg-bench-") as tmp:
        model, info, ckpt = _load(weights)
        h, w = info.imgsz
        g = torch.Generator().manual_seed(0)
        c = info.in_channels
        x1, xn = torch.rand(1, c, h, w, generator=g), torch.rand(batch, c, h, w, generator=g)
        log(
            f"benchmark: {weights} on {cpu}, {threads} threads (torch and ONNX Runtime), input {h}x{w}, "
            f"batch-1 latency over {runs} runs and batch-{batch} throughput, {warmup} warm-up runs"
        )
        fp32 = _fp32_onnx(weights, model, info, cfg, Path(tmp), notes)
        int8, int8_note = _int8_onnx(weights, model, info, ckpt, cfg, Path(tmp), notes)
        if int8 is None and int8_note:
            log(f"  int8 skipped: {int8_note} (pass data=<dataset> or source=<images> to calibrate)")
        onnx_files = [("ONNX Runtime fp32", fp32), ("ONNX Runtime int8", int8)]
        bf16 = _bf16_model(model, cfg.train.amp)
        candidates = _candidates(model, x1, xn, onnx_files, threads, weights.parent, bf16)
        if cfg.predict.compile and model is not None:
            candidates.append(_compiled(model, x1, xn, cfg, notes))  # _rows puts it in table order
        log(f"  timing {', '.join(c.name for c in candidates)} (interleaved)")
        load_before = load_average()
        with torch.inference_mode():
            measured = {r.backend: r for r in measure_interleaved(candidates, batch, warmup, runs)}
        load = (load_before, load_average())
        rows = _rows(measured, int8_note, bf16_note(cfg.train.amp), compiled=cfg.predict.compile)

    save_dir = increment_path(Path(rt.project) / "benchmark", rt.name, rt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    result = BenchmarkResult(rows, save_dir, threads, cpu, (h, w), batch, str(weights), notes, load)
    result.write_csv(save_dir / "benchmark.csv")
    log(result.table())
    for note in notes:
        log(f"note: {note}")
    log(f"Results saved to {save_dir / 'benchmark.csv'}")
    return result


def _load(weights: Path) -> tuple[torch.nn.Module | None, ModelInfo, dict[str, Any]]:
    """The model (None for an ``.onnx``: ONNX Runtime rows only), its metadata and its checkpoint dict."""
    if weights.suffix.lower() == ".onnx":
        return None, ModelInfo.from_metadata(read_onnx_metadata(weights), str(weights)), {}
    return load_model(weights)


def _fp32_onnx(
    weights: Path, model: torch.nn.Module | None, info: ModelInfo, cfg: Config, tmp: Path, notes: list[str]
) -> Path:
    """The fp32 ONNX model: the file given, the fresh export beside the checkpoint, or a temporary export."""
    if model is None:
        return weights
    fp32 = weights.with_suffix(".onnx")
    if not _fresh(fp32, weights):
        fp32 = tmp / f"{weights.stem}.onnx"
        export_onnx(fold_batchnorm(model), fp32, info, cfg.export.opset)
        notes.append(f"fp32 ONNX exported to a temporary folder (no fresh {weights.with_suffix('.onnx').name})")
    return fp32


def _int8_onnx(
    weights: Path,
    model: torch.nn.Module | None,
    info: ModelInfo,
    ckpt: dict[str, Any],
    cfg: Config,
    tmp: Path,
    notes: list[str],
) -> tuple[Path | None, str]:
    """The int8 ONNX model (fresh beside the weights, or quantized to ``tmp``), or None and why it is skipped."""
    int8 = int8_path_for(weights if model is None else weights.with_suffix(".onnx"))
    ec = cfg.export
    if _fresh(int8, weights):
        differ = settings_differ(int8, ec.int8_reduce_range, ec.int8_float_layers)
        if not differ:
            return int8, ""
        if model is None:
            notes.append(f"{int8.name} was quantized with {differ}: timed as it is (re-quantizing needs the .pt)")
            return int8, ""
        notes.append(f"{int8.name} beside the weights was quantized with {differ}, not as asked: re-quantized")
    elif model is None:
        return None, f"no fresh {weights.stem}.int8.onnx beside the ONNX model"
    spec, why_not = open_dataset(ckpt, cfg, info.imgsz)
    n = ec.calib_images
    calib = split_images(spec, "train", info.imgsz, n) or source_images(
        cfg.predict.source, info.imgsz, n, info.in_channels
    )
    if calib is None:
        return None, f"no calibration images: {why_not or 'no train split'}"
    quantized = quantize_int8(
        model,
        tmp / f"{weights.stem}.int8.onnx",
        calib.images,
        info,
        cfg.export.opset,
        reduce_range=ec.int8_reduce_range,
        float_layers=ec.int8_float_layers,
    )
    notes.append(f"int8 quantized to a temporary folder, calibrated on {calib.origin}")
    return quantized, ""


def bf16_note(amp: bool) -> str:
    """Why the bf16 row is not timed ('' when it is): val/test/predict/serve would not use bf16 here either."""
    if not amp:
        return "amp=false (fp32 forced)"
    return "" if cpu_has_native_bf16() else "no bf16 units on this CPU (emulated bf16 is slower than fp32)"


def _bf16_model(model: torch.nn.Module | None, amp: bool) -> TorchBackend | None:
    """The checkpoint as val/test/predict/serve run it in bf16 (autocast), or None when they would not."""
    if model is None or bf16_note(amp):
        return None
    return TorchBackend(model, "cpu", torch.bfloat16)


def _compiled(model: torch.nn.Module, x1: torch.Tensor, xn: torch.Tensor, cfg: Config, notes: list[str]) -> Candidate:
    """``compile=true``: the checkpoint as val/test/predict/serve run it then, compiled for both shapes up front
    (the compilation time goes into the notes, not into the timings)."""
    dtype = None if bf16_note(cfg.train.amp) else torch.bfloat16
    backend = TorchBackend(model, "cpu", dtype, compile=True)
    start = time.perf_counter()
    backend(x1)
    backend(xn)
    notes.append(
        f"PyTorch compiled: {time.perf_counter() - start:.0f} s to compile batch 1 and batch {len(xn)} first "
        f"(once per input shape and process)"
    )
    return Candidate(
        "PyTorch compiled", lambda: backend(x1), lambda: backend(xn), f"torch.compile, {backend.precision}"
    )


def _candidates(
    model: torch.nn.Module | None,
    x1: torch.Tensor,
    xn: torch.Tensor,
    onnx_files: list[tuple[str, Path | None]],
    threads: int,
    home: Path,
    bf16: TorchBackend | None = None,
) -> list[Candidate]:
    """What is timed: PyTorch eager and channels_last (with a checkpoint), bf16 autocast (``bf16``, the
    checkpoint's backend under autocast), and each ONNX file that exists.

    An ONNX file outside ``home`` (the weights' folder) is noted as a temporary export.
    """
    candidates: list[Candidate] = []
    if model is not None:
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        c1, cn = (x.contiguous(memory_format=torch.channels_last) for x in (x1, xn))
        candidates += [
            Candidate("PyTorch eager", lambda: model(x1), lambda: model(xn)),
            Candidate("PyTorch channels_last", lambda: cl(c1), lambda: cl(cn)),
        ]
    if bf16 is not None:
        candidates.append(Candidate("PyTorch bf16", lambda: bf16(x1), lambda: bf16(xn), "autocast, float32 logits"))
    a1, an = x1.numpy(), xn.numpy()
    for name, path in onnx_files:
        if path is None:
            continue
        with quiet():
            backend = OnnxBackend(path, threads)
        sess, inp = backend.session, backend.input_name
        candidates.append(
            Candidate(
                name,
                lambda s=sess, i=inp: s.run(None, {i: a1}),
                lambda s=sess, i=inp: s.run(None, {i: an}),
                "" if path.parent == home else "temporary export",
            )
        )
    return candidates


def _rows(
    measured: dict[str, BenchmarkRow], int8_note: str, bf16_why: str = "", compiled: bool = False
) -> list[BenchmarkRow]:
    """One row per backend, in table order; a backend that was not timed gets an empty row saying why
    (the compiled row exists only with ``compile=true``)."""
    skipped = {
        "PyTorch eager": "no checkpoint given",
        "PyTorch channels_last": "no checkpoint given",
        "PyTorch bf16": bf16_why or "no checkpoint given",
        "ONNX Runtime int8": int8_note,
    }
    order = ["PyTorch eager", "PyTorch channels_last", "PyTorch bf16", "ONNX Runtime fp32", "ONNX Runtime int8"]
    if compiled:
        order.insert(3, "PyTorch compiled")
        skipped["PyTorch compiled"] = "no checkpoint given"
    return [measured.get(name) or BenchmarkRow(name, note=skipped.get(name, "")) for name in order]


__all__ = ["BenchmarkResult", "benchmark", "bf16_note"]
