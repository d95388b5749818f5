"""Process set-up shared by every command: threads, seeds, device, DDP, run folders."""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mobileseg.config import RuntimeConfig, default_threads
from mobileseg.errors import ConfigError


@dataclass
class Dist:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    # In a process group (under torchrun, also with one process): DDP wraps the model, metrics are all-reduced.
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_threads(threads: int | None, world_size: int = 1) -> int:
    """Pin torch's intra-op threads to the cores this process owns.

    On a 2-core machine, leaving PyTorch's default next to DataLoader workers or other processes oversubscribes
    the cores and a training step gets several times slower; DDP processes split the cores between them.
    """
    n = threads or max(1, default_threads() // world_size)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    keep_freed_memory()
    return n


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def has_glibc() -> bool:
    """True on Linux with glibc, whose ``mallopt`` :func:`keep_freed_memory` calls (not musl, macOS, Windows)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for the next batch instead of returning them to the
    kernel; True when applied (Linux with glibc, unless ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or
    ``GLIBC_TUNABLES`` already set these for the process).

    Why: every forward pass allocates the same large activations again (the 96-channel 112x112 map of a batch
    of eight 224x224 images is 19 MiB in bf16). With glibc's defaults those blocks are returned to the kernel
    when freed (mmap'd chunks, and a heap top beyond the trim threshold) and must be faulted in page by page on
    the next batch, which on a 2-core KVM guest cost more than the convolution writing them: the 16 -> 96 1x1
    conv of the second encoder block took 53 ms instead of 8.5 ms in the profile of a bf16 batch. Keeping them
    made bf16 inference 1.15-1.18x faster (batch 8, 224 px, 2 threads, Zen 4; 62-64 -> 71-76 images/s) for
    about 80 MB more resident memory; the training step did not change. Freed memory below the trim threshold
    (1 GiB) stays with the process, so RSS stays at its peak rather than shrinking between batches. PyTorch's own
    performance guide recommends a caching allocator (jemalloc, tcmalloc) for the same reason; this needs no
    preloaded library.
    """
    if not has_glibc():
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) or "malloc" in (
        os.environ.get("GLIBC_TUNABLES", "")
    ):
        return False  # the user's own allocator settings win
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def cpu_has_any(*checks: str) -> bool:
    """True when any of torch.cpu's private feature probes (e.g. ``_is_vnni_supported``) says yes; a probe this
    PyTorch lacks counts as no."""
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), where bf16 autocast pays.

    Measured on a 2-core AMD EPYC with AVX512-BF16: bf16 matmul 932 GFLOP/s vs 215 fp32, and a training step of
    this model 1.7-1.9x faster under bf16 autocast. Without those units PyTorch emulates bf16 and it is slower
    than fp32, so autocast stays off there.
    """
    return cpu_has_any("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def autocast_dtype(device: torch.device | str, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype that pays on ``device``, or None for fp32 (``enabled=False``: the ``amp=false`` key).

    CUDA: bf16 where the GPU supports it (no overflow, no grad scaler needed), else fp16. CPU: bf16 only with
    bf16 units (:func:`cpu_has_native_bf16`); elsewhere it is emulated and slower than fp32. Other devices
    (MPS): fp32. Training and inference of ``.pt`` models share this choice.
    """
    device = torch.device(device)
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32`` (None = no autocast): how runs record the precision of their figures."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype is not None else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for, but CUDA is not available on this machine")
    return device


def init_distributed(device_name: str = "auto") -> Dist:
    """Join the process group when launched by torchrun: NCCL on CUDA, gloo on the CPU.

    torchrun's ``--nproc_per_node=1`` joins too (a one-process group, as torchvision's references do), so the
    DDP path, NCCL included, runs the same on one GPU as on eight. Plain ``python``/``mobileseg`` never joins.

    Raises:
        ConfigError: more processes on this machine than it has CUDA devices (NCCL cannot share one GPU between
            processes; an unchecked start fails later with "invalid device ordinal").
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "TORCHELASTIC_RUN_ID" in os.environ  # set by torchrun for each process, also when there is one
    if world <= 1 and not launched:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            gpus = torch.cuda.device_count()
            if local >= gpus:
                per_node = os.environ.get("LOCAL_WORLD_SIZE", str(local + 1))
                raise ConfigError(
                    f"torchrun started {per_node} processes on this machine but it has {gpus} CUDA device(s): "
                    f"use --nproc_per_node={gpus} (NCCL gives each process its own GPU), or device=cpu for gloo"
                )
            torch.cuda.set_device(local)
        # device_id binds the group to this process's GPU (barriers then need no guess of the device); the group
        # is destroyed at exit, as PyTorch asks, so NCCL does not warn about leaked resources.
        bound = {"device_id": torch.device("cuda", local)} if use_cuda else {}
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **bound)
        atexit.register(_leave_process_group)
    return Dist(rank=rank, local_rank=local, world_size=world, enabled=True)


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """``tensor`` reduced over every DDP process (itself when none joined), on the device it came from.

    Why not ``dist.all_reduce`` directly: NCCL reduces GPU tensors only ("No backend type associated with device
    type cpu", seen on the first CUDA run), while the counters reduced here live on the CPU; gloo takes them as
    they are.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    nccl = dist.get_backend() == "nccl"
    work = tensor.to(torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")
    dist.all_reduce(work, op=op)
    return work.to(tensor.device)


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) copied to every DDP process; nothing without DDP.

    Why: DDP broadcasts rank 0's buffers at the start of each forward pass, and that forward then updates them from
    the rank's own batch, so after an epoch's last step every rank holds slightly different statistics. Validation
    is sharded over the ranks, so each shard would be scored by another model than the one saved (rank 0's).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def increment_path(root: str | Path, name: str | None, exist_ok: bool = False) -> Path:
    """``root/exp``, then ``root/exp2``, ``root/exp3``... unless ``exist_ok`` (Ultralytics' run naming)."""
    root = Path(root)
    base = name or "exp"
    path = root / base
    if exist_ok or not path.exists():
        return path
    pattern = re.compile(rf"^{re.escape(base)}(\d+)$")
    taken = [int(m.group(1)) for p in root.iterdir() if (m := pattern.match(p.name))] if root.exists() else []
    n = max([1, *taken]) + 1
    while (root / f"{base}{n}").exists():
        n += 1
    return root / f"{base}{n}"


def prepare(runtime: RuntimeConfig) -> tuple[Dist, torch.device, int]:
    """Threads, DDP, device and seed for a command; returns (dist info, device, threads)."""
    d = init_distributed(runtime.device)
    threads = setup_threads(runtime.threads, d.world_size)
    device = select_device(runtime.device, d.local_rank)
    seed_everything(runtime.seed)
    return d, device, threads


def every_rank(flag: bool, *, any_rank: bool = False) -> bool:
    """``flag`` held on every DDP process (or on any, ``any_rank=True``): one answer everywhere, so that all
    processes stop together (one raising alone would leave the others waiting in the next collective)."""
    op = dist.ReduceOp.MAX if any_rank else dist.ReduceOp.MIN
    return bool(all_reduce(torch.tensor([float(flag)]), op=op).item())
