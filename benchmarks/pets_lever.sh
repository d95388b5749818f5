#!/usr/bin/env bash
# One pets recipe lever, measured the way the README's "Every pets recipe lever at a glance" table was: the pets
# preset plus the lever's keys, seeds 0 and 1 trained side by side (each pinned to its own core, 1 thread, so the
# two runs do not slow each other), then both checkpoints (best.pt: the best val epoch; last.pt: the final epoch)
# tested on the official test split without TTA, with tta=flip and with tta=flip+ms. Run from the repo root.
#   benchmarks/pets_lever.sh NAME [key=value ...]
#   benchmarks/pets_lever.sh e45 epochs=45            # runs/train/pets_e45_s0, pets_e45_s1
#   benchmarks/pets_lever.sh preset                   # the preset itself, as the baseline
#   SEEDS=2 benchmarks/pets_lever.sh preset           # another seed (seeds alternate between the two cores,
#   SEEDS=2 FIRST_CORE=1 benchmarks/pets_lever.sh ctx128 decoder_context=128   # starting at FIRST_CORE)
# The table lands in runs/levers/NAME.txt (one line per seed, checkpoint and test setting). About 25 min on the
# 2-core Zen 4 machine (bf16), an hour on the 2-core AVX2 machine (fp32); the two seeds need two free cores.
set -euo pipefail
NAME=${1:?usage: benchmarks/pets_lever.sh NAME [key=value ...]}
shift
DATA=${DATA:-../shared/data/oxford_pets}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet.pt}
MS=${MS:-.venv/bin/mobileseg}
SEEDS=${SEEDS:-0 1}  # e.g. SEEDS=2 for a third seed alone, SEEDS="0 1 2" for three
FIRST_CORE=${FIRST_CORE:-0}  # the core of the first seed (0 or 1)
OUT=runs/levers
mkdir -p "$OUT"

one_seed() {  # core seed: train, then test both checkpoints three ways; prints the table's lines
  local core=$1 seed=$2 run="pets_${NAME}_s$2"
  shift 2
  if ! taskset -c "$core" $MS train cfg=examples/configs/oxford_pets.yaml data="$DATA" encoder_weights="$WEIGHTS" \
    seed="$seed" threads=1 workers=0 name="$run" "$@" >"$OUT/$run.train.log" 2>&1; then
    echo "$NAME seed $seed: training failed, see $OUT/$run.train.log"
    return
  fi
  for ckpt in best last; do
    for tta in none flip flip+ms; do
      iou=$(taskset -c "$core" $MS test weights="runs/train/$run/weights/$ckpt.pt" threads=1 workers=0 tta="$tta" \
        name="${run}_${ckpt}_${tta/+/_}" exist_ok=true 2>&1 | grep -oE "iou [0-9.]+" | head -n 1 || true)
      echo "$NAME seed $seed $ckpt.pt tta=$tta: ${iou:-test failed}"
    done
  done
}

core=$FIRST_CORE
for seed in $SEEDS; do  # one run per core at a time: the seeds alternate between cores 0 and 1
  one_seed "$core" "$seed" "$@" >"$OUT/$NAME.s$seed.txt" &
  core=$((1 - core))
  [ "$core" = "$FIRST_CORE" ] && wait
done
wait
for seed in $SEEDS; do cat "$OUT/$NAME.s$seed.txt"; done | tee "$OUT/$NAME.txt"
