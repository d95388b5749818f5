"""Thin-structure benchmarks on real data: CamVid pole-vs-rest and Dubai aerial road-vs-rest, trained with defaults.

Two binary tasks built from ``../shared`` by a dataset YAML each (written under ``runs/thin_data/``, pointing at the
shared folders, nothing copied):

* ``pole``: CamVid (SegNet 11-class version), class 2 Pole (~1.4 % of labelled pixels, 1-4 px wide at 360x480)
  vs everything else; void (11) ignored; the official train/val/test lists (367/101/233).
* ``road``: Dubai aerial tiles, class 2 Road (~10 % of pixels, long 5-30 px wide strips at native size) vs the
  rest; 255 (unannotated) ignored; split by tile (train tiles 1-6, val tile 7, test tile 8).
* ``car``, ``pavement``, ``tree``: other CamVid classes against the rest, built like ``pole``: wider foregrounds
  on both sides of ``loss=auto``'s 10 % line, to measure the rule (``--variant bce="loss=bce"``).

Each variant is ``mobileseg train`` then ``mobileseg test`` on the test split with the given ``key=value``
overrides on top of the task's base settings; the script prints test IoU / precision / recall of the foreground and
the training time, and appends one JSON line per run to ``runs/thin_structures.jsonl``.

    .venv/bin/python benchmarks/thin_structures.py pole --variant old="decoder=tutorial loss=bce" \\
        --variant new="" epochs=8
    .venv/bin/python benchmarks/thin_structures.py road --variant new="" epochs=20

``--variant NAME="k=v ..."`` may be repeated (default: one run with the defaults, ``default=""``); trailing
``key=value`` arguments apply to every variant (e.g. ``epochs=8 threads=1``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mobileseg.data.files import preset_doc
from mobileseg.errors import run_script

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MS = str(ROOT / ".venv" / "bin" / "mobileseg")


CAMVID_NAMES: list[str] = preset_doc("camvid")["names"]  # the 11 classes, raw values 0-10 (11 = void)
CAMVID_BASE = ["imgsz=256x352", "epochs=8"]


def camvid_task(names: list[str], mask_values: dict[int, object], **extra: object) -> dict[str, object]:
    """A task on the CamVid folder in ``../shared``: the given classes and raw-value mapping (void ignored), the
    official split, 8 epochs at 256x352."""
    return {
        "yaml": {
            "path": str(SHARED / "data" / "camvid"),
            "names": names,
            "mask_values": {**mask_values, 11: "ignore"},
            "splits": {"train": "splits/train.txt", "val": "splits/val.txt", "test": "splits/test.txt"},
        },
        "base": CAMVID_BASE,
        **extra,
    }


def camvid_vs_rest(value: int, name: str) -> dict[str, object]:
    """CamVid class ``value`` against every other class."""
    return camvid_task(["background", name], {**{v: 0 for v in range(11)}, value: 1})


def camvid_grouped(groups: dict[str, list[int]] | None = None) -> dict[str, object]:
    """CamVid as a multi-class task, optionally with classes merged (``groups``: new name -> raw values), to measure
    ``loss=auto``'s multi-class line (cross-entropy, plus Dice when the rarest class is under 10 % of the train
    pixels; 1 % before these runs) with the rarest class at several shares."""
    groups = groups or {}
    merged = {v for values in groups.values() for v in values}
    names = [n for v, n in enumerate(CAMVID_NAMES) if v not in merged] + list(groups)
    index = {n: i for i, n in enumerate(names)}
    mapping: dict[int, object] = {v: index[n] for v, n in enumerate(CAMVID_NAMES) if v not in merged}
    mapping |= {v: index[name] for name, values in groups.items() for v in values}
    # IoU reported per run: the merged classes, Fence and Pavement (the next rarest); else the three rarest
    rare = [n for n in [*groups, "Fence", "Pavement"] if n in names] if groups else ["Bicyclist", "Pedestrian", "Pole"]
    return camvid_task(names, mapping, rare=rare)


TASKS: dict[str, dict[str, object]] = {
    "pole": camvid_vs_rest(2, "pole"),
    # loss=auto's multi-class line, measured around its old place (1 % of the train pixels at 256x352, as the rule
    # counts them): all 11 classes (rarest: Bicyclist, 0.3 %); 9 classes with Pedestrian + Bicyclist = Person
    # (0.97 %, just under the old line) and Pole + SignSymbol = PoleSign; 8 classes with all four thin / small
    # classes merged into one (rarest then Fence, 1.2 %, over the old line: plain cross-entropy there).
    "camvid11": camvid_grouped(),
    "camvid9": camvid_grouped({"Person": [9, 10], "PoleSign": [2, 6]}),
    "camvid8": camvid_grouped({"Thin": [2, 6, 9, 10]}),
    # ... and Fence merged in as well: the rarest class is then at ~4.4 %, between the old line and the new one.
    "camvid7": camvid_grouped({"ThinFence": [2, 6, 7, 9, 10]}),
    # Other CamVid classes as binary tasks, to measure loss=auto's foreground-share rule on both sides of its
    # 10 % line with one kind of data (train pixels at 256x352, as the rule measures: pavement 4.7 %, car 6.1 %,
    # tree 10.1 %).
    "car": camvid_vs_rest(8, "car"),
    "pavement": camvid_vs_rest(4, "pavement"),
    "tree": camvid_vs_rest(5, "tree"),
    "road": {
        "yaml": {
            "path": str(SHARED / "data" / "dubai_aerial"),
            "names": ["background", "road"],
            "mask_values": {0: 0, 1: 0, 2: 1, 3: 0, 4: 0, 5: 0, 255: "ignore"},
            "splits": {"train": "splits/train.txt", "val": "splits/val.txt", "test": "splits/test.txt"},
        },
        "base": ["imgsz=512x512", "epochs=20", "batch=4"],
    },
}


def write_yaml(task: str) -> Path:
    """The task's dataset YAML under runs/thin_data/ (JSON is valid YAML)."""
    out = ROOT / "runs" / "thin_data" / f"{task}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TASKS[task]["yaml"], indent=1))
    return out


def run_variant(task: str, name: str, overrides: list[str], weights: str) -> dict[str, object]:
    """Train + test one variant; returns the figures."""
    run = f"thin_{task}_{name}"
    data = write_yaml(task)
    args = [f"data={data}", f"encoder_weights={weights}", f"name={run}", "exist_ok=true", "verbose=false"]
    t0 = time.perf_counter()
    subprocess.run([MS, "train", *TASKS[task]["base"], *args, *overrides], check=True)  # type: ignore[list-item]
    train_s = time.perf_counter() - t0
    best = ROOT / "runs" / "train" / run / "weights" / "best.pt"
    test_over = [o for o in overrides if o.split("=")[0] in {"threads", "infer", "overlap", "tta"}]
    subprocess.run([MS, "test", f"weights={best}", f"name={run}", "exist_ok=true", *test_over], check=True)
    report = json.loads((ROOT / "runs" / "test" / run / "metrics.json").read_text())
    metrics = report["metrics"]
    row = {
        "task": task,
        "variant": name,
        "overrides": overrides,
        "iou": metrics.get("iou", metrics.get("miou")),
        "precision": metrics.get("precision"),
        "recall": metrics.get("recall"),
        "train_s": round(train_s),
    }
    for cls in TASKS[task].get("rare", []):  # type: ignore[union-attr]
        row[f"iou_{cls}"] = report["per_class"][cls]["iou"]
    row["loss"] = loss_line(ROOT / "runs" / "train" / run)
    with (ROOT / "runs" / "thin_structures.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def loss_line(run_dir: Path) -> str:
    """The loss the run trained with, as its model card states it ('' when not found)."""
    card = run_dir / "README.md"
    text = card.read_text() if card.exists() else ""
    return next((line.strip("-* ") for line in text.splitlines() if line.lower().lstrip("-* ").startswith("loss")), "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--variant", action="append", default=[], help='NAME="key=value ..." (repeatable)')
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_imagenet.pt"))
    p.add_argument("overrides", nargs="*", help="key=value applied to every variant")
    a = p.parse_intermixed_args(argv)
    variants = [v.split("=", 1) for v in a.variant] or [["default", ""]]
    rows = []
    for name, extra in variants:
        rows.append(run_variant(a.task, name, [*a.overrides, *shlex.split(extra)], a.weights))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| task | variant | overrides | test IoU | precision | recall | train s |\n|---|---|---|---|---|---|---|")
    # (multi-class tasks: test mIoU and macro precision / recall; the rare classes' IoU are in the JSON lines)
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"| {r['task']} | {r['variant']} | {' '.join(r['overrides'])} | {fmt(r['iou'])} | "
            f"{fmt(r['precision'])} | {fmt(r['recall'])} | {r['train_s']} |"
        )


if __name__ == "__main__":
    sys.exit(run_script(main))
