"""Timing helpers shared by ``mobileseg benchmark``, the export's int8 speed line and the benchmarks/ scripts.

A module of its own (it imports nothing from mobileseg) so that benchmarking and deploy can both time things
without importing each other.

Example:
    >>> rows = measure_interleaved([Candidate("noop", lambda: None, lambda: None)], batch=8, warmup=0, runs=3)
    >>> rows[0].backend
    'noop'
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> float:
    """The 1-minute load average: above the thread count, other processes share the cores and figures drop."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return math.nan


@dataclass
class BenchmarkRow:
    """One backend's figures (NaN where it was not measured; ``note`` says why)."""

    backend: str
    latency_ms: float = math.nan
    latency_p90_ms: float = math.nan
    images_s: float = math.nan
    note: str = ""


@dataclass
class Candidate:
    """A backend to time: ``one`` runs a batch of 1, ``many`` a batch of N."""

    name: str
    one: Callable[[], Any]
    many: Callable[[], Any]
    note: str = ""


def measure_interleaved(
    candidates: list[Candidate], batch: int, warmup: int, runs: int, batch_runs: int | None = None
) -> list[BenchmarkRow]:
    """Time every candidate round-robin (run r of each backend, then run r+1...), after ``warmup`` runs of each.

    Why round-robin: on a shared machine the load changes from second to second; measuring one backend after
    the other would hand one of them the quiet minute. Interleaved, every backend sees the same conditions, so
    the *ratios* stay meaningful even when the absolute figures suffer.

    Args:
        batch: images per ``many`` call.
        runs: timed batch-1 runs per candidate.
        batch_runs: timed batch-N runs per candidate (default: half of ``runs``, at least 3).
    """
    for c in candidates:
        for _ in range(warmup):
            c.one()
            c.many()
    latency: dict[str, list[float]] = {c.name: [] for c in candidates}
    batch_s: dict[str, list[float]] = {c.name: [] for c in candidates}
    for _ in range(max(1, runs)):
        for c in candidates:
            start = time.perf_counter()
            c.one()
            latency[c.name].append(time.perf_counter() - start)
    for _ in range(batch_runs or max(3, runs // 2)):
        for c in candidates:
            start = time.perf_counter()
            c.many()
            batch_s[c.name].append(time.perf_counter() - start)
    rows = []
    for c in candidates:
        ms = np.array(latency[c.name]) * 1000
        rate = batch / statistics.median(batch_s[c.name])
        rows.append(BenchmarkRow(c.name, float(np.median(ms)), float(np.percentile(ms, 90)), rate, c.note))
    return rows


__all__ = ["BenchmarkRow", "Candidate", "cpu_model", "load_average", "measure_interleaved"]
