#!/usr/bin/env bash
# Issue acceptance: CamVid, 11 classes (void ignored), test mIoU with the per-class table, without and with test-time
# augmentation (flips and scales). Run from the repo root.
# NAME=camvid_cw benchmarks/train_camvid.sh threads=1 workers=0   # another run folder; extra keys go to train
set -euo pipefail
DATA=${DATA:-../shared/data/camvid}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet.pt}
MS=${MS:-.venv/bin/mobileseg}
NAME=${NAME:-camvid}
$MS train cfg=examples/configs/camvid.yaml data=$DATA encoder_weights=$WEIGHTS name=$NAME exist_ok=true "$@"
$MS test weights=runs/train/$NAME/weights/best.pt name=$NAME exist_ok=true
$MS test weights=runs/train/$NAME/weights/best.pt name=${NAME}_tta exist_ok=true tta=flip+ms  # the preset's 7 scales
$MS test weights=runs/train/$NAME/weights/best.pt name=${NAME}_tta3 exist_ok=true tta=flip+ms tta_scales=0.75,1,1.25
