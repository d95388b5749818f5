#!/usr/bin/env bash
# The GPU round: what had never run on a GPU, in one pass on a lent machine (one NVIDIA H200 here), from the repo
# root: a CUDA training of the pets preset under bf16 autocast, validation / prediction / export on CUDA, ONNX
# Runtime's CUDA provider where the installed onnxruntime has it, torchrun with NCCL, and inference speed
# (benchmarks/gpu_speed.py). Each step logs to $OUT/<step>.log (with the run
# folders' tables), the checkpoint stays in runs/train/pets_cuda and a failed step does not stop the others.
#   DATA=path/to/oxford_pets-or-data.yaml WEIGHTS=path/to/mobilenet_v2_imagenet.pt OUT=dir benchmarks/gpu_check.sh
set -u
DATA=${DATA:-../shared/data/oxford_pets}
WEIGHTS=${WEIGHTS:-../shared/weights/mobilenet_v2_imagenet.pt}
OUT=${OUT:-runs/gpu_check}
MS=${MS:-python3 -m mobileseg}
WORKERS=${WORKERS:-8}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu EPOCHS=1: a dry run of the script on a machine without a GPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The pets preset's keys (examples/configs/oxford_pets.yaml) spelled out, so DATA may be a data YAML as well.
PETS="imgsz=224 batch=8 lr=0.001 encoder_lr_mult=0.1 warmup_epochs=1 patience=0"

step() {  # step NAME COMMAND...: run, time and log one step; never exits the script
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc, $((SECONDS - t0)) s"
  tail -n 6 "$OUT/$name.log"
}

step env bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; python3 -c '
import torch, torchvision, onnxruntime as ort
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"torchvision\", torchvision.__version__, \"onnxruntime\", ort.__version__, ort.get_available_providers())
print(\"nccl\", torch.cuda.nccl.version(), \"bf16\", torch.cuda.is_bf16_supported())'"

# 1. A CUDA training with AMP: the pets preset (bf16 autocast, chosen by amp=true on a bf16 GPU).
step train_pets $MS train $PETS epochs=${EPOCHS:-30} data=$DATA encoder_weights=$WEIGHTS device=$DEVICE workers=$WORKERS \
  name=pets_cuda exist_ok=true
W=runs/train/pets_cuda/weights
# 2. The same checkpoint validated on CUDA (bf16 autocast and fp32), predicted, exported, the ONNX file on CUDA.
step val_bf16 $MS val weights=$W/best.pt device=$DEVICE workers=$WORKERS name=pets_cuda exist_ok=true
step val_fp32 $MS val weights=$W/best.pt device=$DEVICE workers=$WORKERS amp=false name=pets_cuda_fp32 exist_ok=true
step predict $MS predict weights=$W/best.pt device=$DEVICE source=src/mobileseg/assets/pets_sample/images \
  name=pets_cuda exist_ok=true
step export $MS export weights=$W/best.pt
step val_onnx $MS val weights=$W/best.onnx data=$DATA device=$DEVICE workers=$WORKERS name=pets_cuda_onnx exist_ok=true
# 3. Inference speed on the GPU.
step speed python3 benchmarks/gpu_speed.py $W/best.pt --batch 1 8 64 --out "$OUT/gpu_speed.json"
# 4. torchrun with NCCL: one process per GPU (NPROC=2 on a one-GPU machine checks the clear error instead).
step torchrun ${TORCHRUN:-torchrun} --standalone --nproc_per_node=${NPROC:-$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')} -m mobileseg train $PETS epochs=${DDP_EPOCHS:-3} data=$DATA \
  encoder_weights=$WEIGHTS device=$DEVICE workers=4 name=pets_ddp exist_ok=true
# 5. A second seed of step 1 when the first steps left time (SECONDS counts from the script's start).
if [ "$SECONDS" -lt "${SEED1_BEFORE_S:-330}" ]; then
  step train_pets_s1 $MS train $PETS epochs=${EPOCHS:-30} data=$DATA encoder_weights=$WEIGHTS device=$DEVICE \
    workers=$WORKERS seed=1 name=pets_cuda_s1 exist_ok=true
fi
for run in train/pets_cuda train/pets_cuda_s1 train/pets_ddp val/pets_cuda val/pets_cuda_fp32 val/pets_cuda_onnx; do
  mkdir -p "$OUT/$run" && cp runs/$run/*.csv runs/$run/*.json runs/$run/*.yaml runs/$run/*.md "$OUT/$run/" 2>/dev/null
done
true
