#!/usr/bin/env bash
# Issue acceptance: CamVid, 11 classes (void ignored), test mIoU with the per-class table. Run from the repo root.
set -euo pipefail
DATA=${DATA:-../shared/data/camvid}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet.pt}
MS=${MS:-.venv/bin/mobileseg}
$MS train cfg=examples/configs/camvid.yaml data=$DATA encoder_weights=$WEIGHTS name=camvid exist_ok=true "$@"
$MS test weights=runs/train/camvid/weights/best.pt name=camvid exist_ok=true
