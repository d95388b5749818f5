"""Memory and latency of ``mobileseg serve`` under a burst of huge uploads mixed with normal ones (issue #18).

Starts ``python -m mobileseg serve`` as a subprocess on 127.0.0.1 (a free port, ``threads=1``) with a tiny random
model it makes (or the checkpoint given), then:

1. baseline: the server's resident memory once it answers;
2. one large PNG alone (a few tens of kB that decode to 6000x6000 by default): the memory one such request costs;
3. the burst: ``--big`` concurrent uploads of that PNG while ``--clients`` threads send ``--normal`` ordinary photos
   (from ``--images``, by default the Oxford pets images when present, else generated 500x375 JPEGs).

Reports the server's peak RSS (``VmHWM`` from ``/proc/<pid>/status``, and the highest RSS sampled every 20 ms with
psutil when installed, else from ``/proc``), p50/p95 latency of the normal requests, and the status codes (503 =
refused because busy, 413 = over ``max_pixels``). Exit status 0 when the peak is under ``--target-gb``.

Usage::

    python benchmarks/serve_load.py                                  # the defaults of mobileseg serve
    python benchmarks/serve_load.py --set max_pixels=40000000         # let 6000x6000 (36 MP) images in
    python benchmarks/serve_load.py --weights best.pt --big 8 --normal 40 --json serve_load.json

Only 127.0.0.1 is contacted; every loop is bounded and the server is stopped at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mobileseg.errors import run_script

PETS = Path("/work/shared/data/oxford_pets/images")
START_TIMEOUT_S = 180


# ------------------------------------------------------------------------------------------------ inputs
def make_model(folder: Path) -> Path:
    """A tiny random-init binary model, saved the way training saves one (the server loads it like any .pt)."""
    from mobileseg.models import Segmenter
    from mobileseg.models.checkpoint import save_checkpoint

    model = Segmenter(num_classes=1, encoder_weights=None).eval()
    ckpt = model.to_checkpoint(names=["background", "pet"], imgsz=(224, 224), ignore_index=255, config={})
    return save_checkpoint(ckpt, folder / "tiny.pt")


def big_png(side: int) -> bytes:
    """A ``side`` x ``side`` PNG of a few shapes: tens of kB on the wire, ``3 * side**2`` bytes once decoded."""
    im = Image.new("RGB", (side, side), (40, 90, 160))
    draw = ImageDraw.Draw(im)
    draw.ellipse((side // 5, side // 5, 3 * side // 5, 4 * side // 5), fill=(220, 180, 60))
    draw.rectangle((side // 2, side // 10, 9 * side // 10, side // 3), fill=(30, 160, 70))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def normal_photos(folder: Path | None, count: int) -> list[tuple[str, bytes]]:
    """``count`` ordinary photos: the first files of ``folder``, else generated noisy 500x375 JPEGs."""
    if folder is not None and folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        if files:
            return [(p.name, p.read_bytes()) for p in files]
    rng = np.random.default_rng(0)
    photos = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
        photos.append((f"photo_{i}.jpg", buf.getvalue()))
    return photos


# ------------------------------------------------------------------------------------------------ server
def start_server(weights: Path, settings: list[str]) -> tuple[subprocess.Popen, str]:
    """``mobileseg serve`` on 127.0.0.1:<free port>; returns the process and its URL once /health answers."""
    import httpx

    command = [sys.executable, "-m", "mobileseg", "serve", f"weights={weights}", "host=127.0.0.1", "port=0"]
    command += ["threads=1", "verbose=false", *settings]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline, seen = time.monotonic() + START_TIMEOUT_S, []
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(r"page: (http://127\.0\.0\.1:\d+/)", line)
        if match:
            url = match.group(1)
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "health", timeout=2, trust_env=False).status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("mobileseg serve did not start:\n" + "".join(seen))


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM) in bytes; 0 where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid``: ``5`` to clear_refs (Linux, own processes)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """The highest RSS of a process, sampled every 20 ms in a thread (psutil when installed, else /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        try:
            import psutil

            process = psutil.Process(pid)
            self._rss = lambda: process.memory_info().rss
        except ImportError:
            self._rss = lambda: proc_status(pid, "VmRSS")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self._rss())
            except Exception:  # the process ended
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------- traffic
def post(client: Any, name: str, data: bytes) -> tuple[int, float]:
    """One upload (JSON answer with a JPEG overlay, as the page asks); (status, seconds)."""
    start = time.perf_counter()
    try:
        r = client.post("predict", files={"file": (name, data, "application/octet-stream")})
        status = r.status_code
    except Exception:  # timeouts and dropped connections count as failures, not as crashes of the benchmark
        status = -1
    return status, time.perf_counter() - start


def burst(url: str, big: bytes, n_big: int, photos: list[tuple[str, bytes]], clients: int) -> dict[str, Any]:
    """``n_big`` big uploads at once, while ``clients`` threads send the normal photos one after the other."""
    import httpx

    limits = httpx.Limits(max_connections=n_big + clients)
    with httpx.Client(base_url=url, timeout=300, trust_env=False, limits=limits) as client:
        with ThreadPoolExecutor(max(1, n_big)) as big_pool, ThreadPoolExecutor(clients) as normal_pool:
            bigs = [big_pool.submit(post, client, "big.png", big) for _ in range(n_big)]
            time.sleep(0.05)  # the big ones arrive first: the normal requests are the ones that would wait
            normals = [normal_pool.submit(post, client, name, data) for name, data in photos]
            big_results = [f.result() for f in bigs]
            normal_results = [f.result() for f in normals]
    ok = sorted(s for code, s in normal_results if code == 200)
    codes: dict[str, int] = {}
    for code, _ in big_results + normal_results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "normal_ok": len(ok),
        "normal_p50_s": statistics.median(ok) if ok else None,
        "normal_p95_s": ok[min(len(ok) - 1, round(0.95 * (len(ok) - 1)))] if ok else None,
        "normal_max_s": ok[-1] if ok else None,
        "big_status": [code for code, _ in big_results],
        "normal_503": sum(code == 503 for code, _ in normal_results),
        "status_counts": codes,
    }


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="model file to serve (default: a tiny random model)")
    parser.add_argument("--side", type=int, default=6000, help="the large PNG is side x side pixels")
    parser.add_argument("--big", type=int, default=4, help="concurrent large uploads in the burst")
    parser.add_argument("--normal", type=int, default=20, help="normal photos sent during the burst")
    parser.add_argument("--clients", type=int, default=2, help="threads sending the normal photos")
    parser.add_argument("--images", type=Path, default=PETS, help="folder of normal photos (else generated)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="mobileseg serve setting")
    parser.add_argument("--target-gb", type=float, default=1.5, help="peak RSS target, GB (10^9 bytes)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    big = big_png(args.side)
    photos = normal_photos(args.images, args.normal)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or make_model(Path(tmp))
        proc, url = start_server(weights, args.set)
        try:
            import httpx

            with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
                model = client.get("model").json()
                post(client, *photos[0])  # warm-up: the first request pays for lazy initialisation
            baseline = proc_status(proc.pid, "VmRSS")
            reset_peak(proc.pid)
            with httpx.Client(base_url=url, timeout=300, trust_env=False) as client, RssSampler(proc.pid) as one:
                single_status, single_s = post(client, "big.png", big)
            single_peak = max(one.peak, proc_status(proc.pid, "VmHWM"))
            reset_peak(proc.pid)
            with RssSampler(proc.pid) as sampler:
                figures = burst(url, big, args.big, photos, args.clients)
            peak = max(sampler.peak, proc_status(proc.pid, "VmHWM"))
        finally:
            stop_server(proc)

    limits = {k: model.get(k) for k in ("max_pixels", "max_output_pixels", "max_concurrent", "max_queue")}
    report = {
        "server_settings": args.set,
        "server_limits": limits,
        "big_png": {"side": args.side, "bytes": len(big)},
        "normal_photos": len(photos),
        "baseline_rss_mb": baseline / 1e6,
        "single_big": {"status": single_status, "seconds": single_s, "peak_rss_mb": single_peak / 1e6},
        "burst": {**figures, "big": args.big, "clients": args.clients, "peak_rss_mb": peak / 1e6},
        "target_gb": args.target_gb,
        "met": peak < args.target_gb * 1e9,
    }
    verdict = "met" if report["met"] else "MISSED"
    print(
        f"server limits: {limits}\n"
        f"large PNG: {args.side}x{args.side}, {len(big) / 1e3:.0f} kB; normal photos: {len(photos)}\n"
        f"baseline RSS: {baseline / 1e6:.0f} MB\n"
        f"one large PNG alone: HTTP {single_status} in {single_s:.2f} s, peak RSS {single_peak / 1e6:.0f} MB\n"
        f"burst ({args.big} large at once + {len(photos)} normal from {args.clients} clients): "
        f"peak RSS {peak / 1e6:.0f} MB (target < {args.target_gb * 1e3:.0f} MB: {verdict})\n"
        f"  normal requests: {figures['normal_ok']} OK, p50 {_s(figures['normal_p50_s'])}, "
        f"p95 {_s(figures['normal_p95_s'])}, max {_s(figures['normal_max_s'])}; 503s: {figures['normal_503']}\n"
        f"  large uploads' status: {figures['big_status']}; all status codes: {figures['status_counts']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["met"] else 1


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(run_script(main))
