"""Per-class logit offsets chosen on val: do they lift rare classes (CamVid's Pole) on the test split?

A constant added to each class's log-probability before the argmax trades precision for recall class by class,
at no cost at inference (it folds into the head's bias). This script scores a multi-class checkpoint as ``test``
does (resize mode at the model's input size, its precision, one pass, one confusion matrix over all pixels),
collects the val and test log-probabilities once, searches the offsets by coordinate steps on val only (mIoU),
and prints val and test mIoU and per-class IoU before and after.

    .venv/bin/python benchmarks/logit_offsets.py runs/train/camvid_e80/weights/best.pt --threads 2

Holds both splits' log-probabilities in memory as float16 (about 2 GB for CamVid's 334 images at 352x480).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mobileseg.config import resolve_config
from mobileseg.deploy.runtimes import open_model
from mobileseg.engine.evaluator import eval_loader, slide_setup
from mobileseg.engine.inference_mode import resolve_settings
from mobileseg.engine.metrics import ConfusionMatrix
from mobileseg.engine.runtime import prepare
from mobileseg.errors import ConfigError, run_script
from mobileseg.models.model_file import load_trained_dataset, trained_data

STEPS = (-1.0, -0.6, -0.4, -0.2, -0.1, 0.1, 0.2, 0.4, 0.6, 1.0)


def confusion(logp: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, ignore: int) -> ConfusionMatrix:
    """The evaluator's confusion matrix of ``argmax(logp + offsets)``, in chunks of 16 images."""
    cm = ConfusionMatrix(logp.shape[1], ignore)
    for i in range(0, len(logp), 16):
        cm.update(target[i : i + 16], (logp[i : i + 16].float() + offsets.view(1, -1, 1, 1)).argmax(1))
    return cm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = resolve_config(None, {"weights": args.weights, "threads": args.threads, "workers": 0})
    _, device, threads = prepare(cfg.runtime)
    backend, info, ckpt = open_model(args.weights, device, threads, cfg.train.amp, False)
    trained = trained_data(ckpt, cfg, info.imgsz)
    if trained is None:
        raise ConfigError(f"{args.weights} names no dataset")
    spec = load_trained_dataset(trained)
    if spec.binary:
        raise ConfigError(f"{args.weights} is binary: its one offset is the threshold (`conf=`), see the README")
    settings = resolve_settings(cfg, info)

    def collect(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset, model, _ = slide_setup(backend, spec, split, info.imgsz, 8, settings, device)
        logps, targets = [], []
        with torch.inference_mode():
            for images, target in eval_loader(dataset, 8, 0):
                logps.append(torch.log_softmax(model(images).float(), 1).half())
                targets.append(target)
        return torch.cat(logps), torch.cat(targets)

    start = time.perf_counter()
    val, test = collect("val"), collect("test")
    print(f"collected {len(val[0])} val and {len(test[0])} test images in {time.perf_counter() - start:.0f} s")
    offsets = torch.zeros(spec.num_classes)
    best = confusion(*val, offsets, spec.ignore_index).compute()["iou"]
    before = (best, confusion(*test, offsets, spec.ignore_index))
    for r in range(args.rounds):
        for k in range(spec.num_classes):
            start_k, choice = offsets[k].item(), offsets[k].item()
            for step in STEPS:
                trial = offsets.clone()
                trial[k] = start_k + step
                m = confusion(*val, trial, spec.ignore_index).compute()["iou"]
                if m > best + 1e-5:
                    best, choice = m, start_k + step
            offsets[k] = choice
        print(f"round {r + 1}: val mIoU {best:.4f}  offsets " + " ".join(f"{v:+.1f}" for v in offsets.tolist()))
    after = confusion(*test, offsets, spec.ignore_index)
    test_was, test_now = before[1].compute()["iou"], after.compute()["iou"]
    print(f"val mIoU {before[0]:.4f} -> {best:.4f}; test mIoU {test_was:.4f} -> {test_now:.4f}")
    was, now = before[1].per_class()["iou"], after.per_class()["iou"]
    print(f"{'class':<14}{'offset':>8}{'test IoU':>10}{'after':>8}")
    for k, name in enumerate(spec.names):
        print(f"{name:<14}{offsets[k]:>+8.1f}{was[k]:>10.3f}{now[k]:>8.3f}")


if __name__ == "__main__":
    sys.exit(run_script(main))
