#!/usr/bin/env bash
# The GPU checks of issue 5 (and a training-step figure), as one short script for a lent H100/H200.
# Usage on the GPU machine, from the repository root:  OUT=out bash benchmarks/gpu_checks.sh
# Needs torch with CUDA, transformers, einops, pytorch-lightning, torchmetrics (no video stack).
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
date -u | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/env.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/env.txt"
timeout 300 python3 benchmarks/similarity.py --device cuda --sizes 1000x1000@12/32,4917x4917@64/64 --dtypes bf16 \
  --compile both 2>&1 | tee "$OUT/similarity.txt"
timeout 100 python3 benchmarks/train_step.py --clip random-vit-b-32 --batch 128 2>&1 | tail -3 | tee "$OUT/train_b128.txt"
timeout 100 python3 benchmarks/train_step.py --clip random-vit-b-32 --batch 256 --checkpointing 2>&1 | tail -3 | tee "$OUT/train_b256_ckpt.txt"
