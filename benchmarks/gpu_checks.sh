#!/usr/bin/env bash
# The GPU checks of issue 5, as one short script for a lent H100/H200 (about 5 minutes; every step
# has its own timeout, 550 s in all, under the device tool's 600 s per command).
# Usage on the GPU machine, from the repository root:  OUT=out bash benchmarks/gpu_checks.sh
# Needs torch with CUDA (and its triton), transformers, einops, pytorch-lightning, torchmetrics, pytest.
set -u
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH=src:benchmarks PYTHONUNBUFFERED=1
date -u | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/env.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/env.txt"
# 1. correctness on the GPU: the compiled Triton kernels against the torch path (and the other CUDA tests)
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_triton_kernel.py tests/test_similarity.py tests/test_backends.py 2>&1 | tail -15 | tee "$OUT/pytest.txt"
# 2. launch configurations of the Triton kernels, beside the torch path in the same process
timeout 200 python3 benchmarks/triton_sweep.py --sizes 1000x1000@12/32,4917x4917@64/64 --runs 3 2>&1 | tee "$OUT/triton_sweep.txt"
# 3. the table: the engine with the Triton kernels against the reference loop, same run
timeout 200 python3 benchmarks/similarity.py --device cuda --sizes 1000x1000@12/32,4917x4917@64/64 --dtypes bf16 \
  --kernel fused --compile off 2>&1 | tee "$OUT/similarity.txt"
