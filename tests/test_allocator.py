"""keep_freed_memory: freed activations stay with the process instead of being faulted in again every batch.

Each probe runs in a new process: the setting is process-wide and glibc adapts its thresholds as it goes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mobileseg.engine.runtime import has_glibc

GLIBC = has_glibc()

# Where glibc puts a 24 MiB tensor (mmap'd = returned to the kernel when freed, and faulted in page by page when
# allocated again), and whether 4 x 20 MiB freed at once stay in the heap (glibc's mallinfo2, in bytes).
PROBE = """
import ctypes, sys, torch
from mobileseg.engine.runtime import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "1" else None
before = libc.mallinfo2().hblkhd
t = torch.ones(6 << 20)
mmapped = libc.mallinfo2().hblkhd - before
del t
ts = [torch.ones(5 << 20) for _ in range(4)]
del ts
print(applied, mmapped, libc.mallinfo2().arena)
"""


def probe(apply: bool, **env: str) -> tuple[str, int, int]:
    """(applied, bytes of the 24 MiB tensor that were mmap'd, heap size after freeing 80 MiB) in a new process."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "1" if apply else "0"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not GLIBC, reason="a glibc malloc setting")
def test_freed_activations_stay_with_the_process() -> None:
    applied, mmapped, heap = probe(True)
    assert applied == "True"
    assert mmapped == 0  # from the heap, reused by the next batch
    assert heap >= 80 << 20  # freed, not trimmed: no page faults to get it back
    _, default_mmapped, _ = probe(False)
    assert default_mmapped >= 24 << 20  # glibc's default: its own mapping, unmapped when freed


@pytest.mark.skipif(not GLIBC, reason="a glibc malloc setting")
def test_the_users_own_malloc_settings_win() -> None:
    applied, _, _ = probe(True, MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
