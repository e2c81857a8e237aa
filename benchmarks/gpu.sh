#!/usr/bin/env bash
# The prepared device check, one command of about 5 minutes on one GPU (the `device` tool's machine has
# python3 with torch, torchvision, numpy, Pillow, PyYAML and tqdm; fgvc runs from src/ without installing):
#   1. benchmarks/run.py on CUDA in fp32, then with bf16 AMP and channels_last (ratios, syncs, memory);
#   2. a short DDP (NCCL) training and evaluation of FBSD-R50 at 448 px through torchrun on generated data.
# Usage: bash benchmarks/gpu.sh OUT_DIR    (files: gpu.txt, bench_fp32.md, bench_bf16_cl.md, ddp.txt)
set -uo pipefail
out=${1:-/tmp/fgvc-gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
gpus=$(nvidia-smi -L | wc -l)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $py -c "import torch; print(torch.__version__)"; } \
  | tee "$out/gpu.txt"
timeout 170 $py benchmarks/run.py --device cuda --iters 10 2>&1 | tee "$out/bench_fp32.md"
timeout 120 $py benchmarks/run.py --device cuda --iters 10 --amp bf16 --channels-last --skip pipeline 2>&1 \
  | tee "$out/bench_bf16_cl.md"
data=/tmp/fgvc-gpu-data run=/tmp/fgvc-gpu-run
rm -rf "$data" "$run"
{
  $py -m fgvc data synth "$data" --classes 10 --per-class 40 --size 448 &&
  $py -m torch.distributed.run --standalone --nproc_per_node="$gpus" -m fgvc train \
    --config fbsd_resnet50_competition --data "$data" --out "$run" --no-progress --no-report \
    --set model.pretrained=false --set train.epochs=2 --set train.channels_last=true &&
  $py -m torch.distributed.run --standalone --nproc_per_node="$gpus" -m fgvc evaluate "$run" --data "$data" \
    --split val --no-progress --no-report
} 2>&1 | grep -v "^\s*$" | tail -60 | tee "$out/ddp.txt"
