#!/usr/bin/env bash
# Issue acceptance: Oxford pets, 224 px, 30 epochs, encoder from ../shared/weights, then the test split;
# the same run with encoder_weights=none to show what pretraining brings. Run from the repo root.
set -euo pipefail
DATA=${DATA:-../shared/data/oxford_pets}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet.pt}
MS=${MS:-.venv/bin/mobileseg}
$MS train cfg=examples/configs/oxford_pets.yaml data=$DATA encoder_weights=$WEIGHTS name=pets exist_ok=true
$MS test weights=runs/train/pets/weights/best.pt name=pets exist_ok=true
$MS train cfg=examples/configs/oxford_pets.yaml data=$DATA encoder_weights=none freeze_bn=false name=pets_scratch exist_ok=true
$MS test weights=runs/train/pets_scratch/weights/best.pt name=pets_scratch exist_ok=true
