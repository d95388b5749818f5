"""Training speed, side by side with the TensorFlow tutorial's Keras model, in one run.

Measures, at batch 8, 224 px, with the threads every mobileseg command uses:

1. the Keras tutorial model's training step (``keras_tutorial_step.py`` in its own environment with
   tensorflow-cpu; created under ``.bench/tfenv`` on first use — never a dependency of mobileseg), training the
   whole model as mobileseg does by default, in float32 and in Keras' ``mixed_bfloat16`` policy (what a Keras user
   on a CPU with bf16 units turns on); the ratio is taken against the faster of the two. The encoder-frozen step
   (the tutorial's own setting, compared with ``mobileseg train freeze_encoder=true``) runs in that precision.
   On a CPU without bf16 units Keras emulates bf16 (~8x slower here), so that row runs 5 timed steps, not 15;
2. mobileseg's pure model step (forward + BCE + backward + AdamW on a fixed batch), in the precision
   ``mobileseg train`` picks here (bf16 autocast on CPUs with bf16 units, else fp32);
3. end-to-end ``mobileseg.train`` throughput over whole epochs (data loading included, as logged in
   results.csv) on the bundled pets sample replicated 1x, 2x and 4x, so the data-pipeline overhead and the
   linear growth of epoch time can be read off;
4. memory of training at batch 16: RSS after each of 12 epochs and the process's peak RSS. The allocator
   settles over the first ~5 epochs (a 30-epoch run here: 1775-1800 MB for epochs 1-4, then 1927-1991 MB flat
   through epoch 30), so growth is read as epochs 9-12 vs 5-8: a leak would show there;
5. this CPU's matmul peak (fp32, and bf16 where it has bf16 units), for the fraction of the FLOP ceiling.

    .venv/bin/python benchmarks/train_speed.py            # prints a table and the ratio
    .venv/bin/python benchmarks/train_speed.py --ratio-only   # Keras (both precisions) and the 4x end-to-end only
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mobileseg.errors import run_script

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul with the process's threads: the practical compute ceiling of this CPU."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def keras_reference(
    tf_python: Path, threads: int, steps: int, freeze_encoder: bool = False, precision: str = "float32"
) -> dict:
    """The Keras tutorial model's training step in ``precision`` (images/s and details), in its own environment."""
    from keras_env import run_keras  # same folder

    args = ["--threads", str(threads), "--steps", str(steps), "--warmup", str(min(5, steps)), "--precision", precision]
    return run_keras(tf_python, *args, *(["--freeze-encoder"] if freeze_encoder else []))


def pure_step(steps: int, amp: bool, batch: int = 8, size: int = 224) -> float:
    """A training step on a fixed batch, in the precision ``mobileseg train`` uses on this machine."""
    from train_levers import measure  # same folder: the step every lever is measured on

    return measure("bf16" if amp else "fp32", batch, size, steps, warmup=3)[0]


def replicated_sample(dest: Path, copies: int) -> Path:
    """The bundled sample's train split repeated ``copies`` times (val kept once), as a dataset YAML."""
    import yaml

    from mobileseg.data import sample_root

    src = sample_root()
    spec = yaml.safe_load((src / "data.yaml").read_text())
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    (dest / "splits").mkdir()
    train = (src / "splits" / "train.txt").read_text().split()
    val = (src / "splits" / "val.txt").read_text().split()
    stems: dict[str, list[str]] = {"train": [], "val": []}
    for split, names, n in (("train", train, copies), ("val", val, 1)):
        for c in range(n):
            for stem in names:
                new = f"{stem}_c{c}"
                img = next((src / "images").glob(f"{stem}.*"))
                shutil.copy(img, dest / "images" / f"{new}{img.suffix}")
                shutil.copy(src / "masks" / f"{stem}.png", dest / "masks" / f"{new}.png")
                stems[split].append(new)
    for split, names in stems.items():
        (dest / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    doc = {k: v for k, v in spec.items() if k not in ("splits", "path")}
    doc.update(path=".", splits={"train": "splits/train.txt", "val": "splits/val.txt"})
    (dest / "data.yaml").write_text(yaml.safe_dump(doc))
    return dest / "data.yaml"


def end_to_end(work: Path, copies: int, epochs: int = 3, batch: int = 8, freeze_encoder: bool = False) -> dict:
    import mobileseg

    name = f"x{copies}" + ("_frozen" if freeze_encoder else "")
    data = replicated_sample(work / name, copies)
    r = mobileseg.train(
        data=str(data),
        epochs=epochs,
        batch=batch,
        encoder_weights="none",
        project=str(work),
        name=name,
        verbose=False,
        augment=True,
        freeze_encoder=freeze_encoder,
    )
    later = r.history[1:]  # epoch 1 decodes every JPEG into the cache
    return {
        "images": int(round(later[0]["img_s"] * later[0]["epoch_s"])),
        "img_s": statistics.median(h["img_s"] for h in later),
        "epoch_s": statistics.median(h["epoch_s"] for h in later),
    }


def memory(work: Path, epochs: int = 12) -> list[float]:
    """RSS (MB) at the end of every epoch of a batch-16 run, from a trainer callback."""
    import mobileseg
    from mobileseg.engine.callbacks import Callback

    rss: list[float] = []

    class RecordRss(Callback):
        def on_epoch_end(self, trainer, row):  # type: ignore[no-untyped-def]
            status = Path("/proc/self/status").read_text()
            rss.append(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024)

    data = replicated_sample(work / "mem", 2)
    mobileseg.train(
        data=str(data),
        epochs=epochs,
        batch=16,
        encoder_weights="none",
        project=str(work),
        name="mem",
        verbose=False,
        callbacks=[RecordRss()],
    )
    return rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tf-python", type=Path, default=ROOT / ".bench" / "tfenv" / "bin" / "python")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--ratio-only", action="store_true", help="skip the pure step, 1x/2x epochs and memory")
    args = ap.parse_args()

    from mobileseg.engine.runtime import cpu_has_native_bf16, setup_threads
    from mobileseg.models import Segmenter

    threads = setup_threads(None)
    amp = cpu_has_native_bf16()  # what mobileseg train does on this CPU with the default amp=true
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown CPU",
    )
    peaks = {"fp32": matmul_peak("float32")}
    if amp:
        peaks["bf16"] = matmul_peak("bfloat16")
    print(
        f"{cpu}, {os.cpu_count()} cores, torch threads {threads}; matmul peak "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        + f"; mobileseg train precision: {'bf16 autocast (CPU has bf16 units)' if amp else 'fp32'}"
    )
    gflops_train = 3 * Segmenter(1).summary((224, 224))["gflops"]  # forward + ~2x for backward

    # Like for like: mobileseg fine-tunes the whole model by default, so the headline pair is both frameworks
    # training everything; the tutorial itself freezes the encoder, so that pair is measured too.
    keras_runs: dict[str, dict] = {}
    keras = keras_frozen = None
    if not args.skip_keras:
        keras_runs["float32"] = keras_reference(args.tf_python, threads, args.steps)
        bf16_steps = args.steps if amp else min(args.steps, 5)  # emulated bf16 takes ~1 s per image here
        keras_runs["mixed_bfloat16"] = keras_reference(args.tf_python, threads, bf16_steps, precision="mixed_bfloat16")
        keras = max(keras_runs.values(), key=lambda r: r["train_img_s"])
        keras_frozen = keras_reference(args.tf_python, threads, args.steps, True, keras["precision"])
    pure = None if args.ratio_only else pure_step(args.steps, amp)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        e2e = {c: end_to_end(work, c) for c in ((4,) if args.ratio_only else (1, 2, 4))}
        frozen = end_to_end(work, 4, freeze_encoder=True)
        rss = None if args.ratio_only else memory(work)

    print(f"\n{'measure':<52}{'images/s':>10}")
    for precision, r in keras_runs.items():
        label = f"Keras tutorial model, train step, {precision}"
        print(f"{label:<52}{r['train_img_s']:>10.2f}   {r['framework']}")
    if keras_frozen:
        label = f"Keras tutorial model, encoder frozen, {keras_frozen['precision']}"
        print(f"{label:<52}{keras_frozen['train_img_s']:>10.2f}")
    if pure is not None:
        print(f"{'mobileseg pure model step':<52}{pure:>10.2f}")
    for c, r in e2e.items():
        label = f"mobileseg train end-to-end, {r['images']} images/epoch ({c}x)"
        print(f"{label:<52}{r['img_s']:>10.2f}   epoch {r['epoch_s']:.1f}s")
    print(f"{'mobileseg train end-to-end, encoder frozen (4x)':<52}{frozen['img_s']:>10.2f}")
    best = e2e[4]["img_s"]
    for kind, peak in peaks.items():
        print(
            f"{kind} FLOP ceiling: {peak:.0f} GFLOP/s / {gflops_train:.1f} GFLOP per training image = "
            f"{peak / gflops_train:.1f} images/s; end-to-end reaches {best * gflops_train / peak:.0%} of it"
        )
    if pure is not None and rss is not None:
        print(f"data pipeline overhead over the pure step: {pure / best - 1:+.1%}")
        ratios = [e2e[c]["epoch_s"] / e2e[1]["epoch_s"] for c in (2, 4)]
        print(f"epoch time vs 1x: 2x -> {ratios[0]:.2f}, 4x -> {ratios[1]:.2f} (linear = 2, 4)")
        n = len(rss)
        growth = statistics.mean(rss[-4:]) - statistics.mean(rss[-8:-4])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"RSS at the end of each epoch, batch 16: {', '.join(f'{m:.0f}' for m in rss)} MB")
        print(
            f"RSS growth, epochs {n - 3}-{n} vs {n - 7}-{n - 4}: {growth:+.0f} MB; "
            f"peak RSS of this process {peak:.0f} MB"
        )
    if keras and keras_frozen:
        print(
            f"\nRATIO mobileseg end-to-end / Keras train step ({keras['precision']}, the faster) = "
            f"{best / keras['train_img_s']:.2f}x (goal 2.0x)\n"
            f"RATIO with the encoder frozen in both = {frozen['img_s'] / keras_frozen['train_img_s']:.2f}x"
        )


if __name__ == "__main__":
    sys.exit(run_script(main))
