#!/usr/bin/env bash
# The GPU checks (issues 5 and 13), as one prepared script for a lent H100/H200: under 10 minutes in all, every
# step under its own `timeout` (budgets below, 560 s together), so one command of the device tool (600 s) holds it.
#
#   OUT=out bash benchmarks/gpu_checks.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_checks.sh --smoke             # anywhere: CPU, tiny sizes, every step end to end (no figures)
#   bash benchmarks/gpu_checks.sh --fetch-wheels      # here, with network: .whl/ for what the GPU image lacks
#   PARTS="fsdp" bash benchmarks/gpu_checks.sh        # optional part: the ViT-L/14 FSDP recipe on one GPU, bf16
#
# Parts (PARTS, default "fit loader kernels"; the first two are issue 13 item 5, the last issue 5's checks):
#   fit      synthetic MSR-VTT data written on this machine's CPUs, the frame cache filled by `xclip-pl cache`,
#            then `xclip-pl fit`'s Trainer path (benchmarks/fit_gpu.py): conf/msrvtt_vit_b32.yaml +
#            conf/overlays/fast.yaml (bf16-mixed, fused AdamW, compile), random ViT-B/32, 12 frames, 32 words, full
#            X-CLIP heads; batch 128, then batch 256 with activation checkpointing: clips/s, peak GiB, MFU.
#            Targets: >= 1300 clips/s within 40 GiB; batch 256 <= 20 GiB at >= 900 clips/s.
#   loader   the training loader from the warm cache, 12 workers, batch 128, no model: clips/s (target >= 1300).
#   kernels  the Triton AOSM kernels against the torch path (pytest on the GPU), a short launch sweep, and the
#            similarity table with `auto` (reported: which backend it picks on this device) and `fused`.
#   fsdp     conf/msrvtt_vit_l14_fsdp.yaml (random-vit-l-14, bf16-mixed, activation checkpointing) on one GPU.
#
# Python: the GPU image's `python3` (CUDA torch, Lightning, transformers), never the repository's .venv (a CPU
# torch); PY=... overrides. What that image lacks (av, jsonargparse[signatures], ftfy, torchdata) is installed from
# .whl/ when the device call carries it (`carry: [".whl"]`; make it here with --fetch-wheels), else the script
# names what is missing and stops. Everything goes to $OUT (one .txt per step, summary.md); the table is printed.
set -u
cd "$(dirname "$0")/.."
SMOKE=${SMOKE:-0}
WHEELS=(av jsonargparse docstring-parser typeshed-client ftfy wcwidth torchdata)
MODULES="av jsonargparse docstring_parser typeshed_client ftfy torchdata"
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --fetch-wheels)
      mkdir -p .whl
      specs=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" "${WHEELS[@]}")
      exec .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $specs ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH=src:benchmarks:.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"

# ----------------------------------------------------------------------------------------------- environment
if [ -z "${PY:-}" ]; then
  if [ "$SMOKE" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "$SMOKE" != 1 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "$PY has no CUDA torch (or no GPU is visible): run on the GPU machine with its python3, or use --smoke" | tee "$OUT/env.txt"
  exit 1
fi
if ! $PY -c "import $(echo $MODULES | tr ' ' ',')" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xclip-site .whl/*.whl \
      && export PYTHONPATH=$PYTHONPATH:/tmp/xclip-site
  fi
  missing=$($PY -c "import importlib.util as u; print(' '.join(m for m in '$MODULES'.split() if u.find_spec(m) is None))")
  if [ -n "$missing" ]; then
    echo "missing Python packages for $PY: $missing (make .whl/ with --fetch-wheels and carry it)" | tee "$OUT/env.txt"
    exit 1
  fi
fi
{ date -u; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, pytorch_lightning as pl; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'lightning', pl.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"
if [ "$SMOKE" = 1 ]; then
  echo "SMOKE: CPU, tiny CLIP and sizes; the figures below check the chain, not speed" | tee -a "$OUT/env.txt"
  DEVICE=cpu; BATCH=8; BATCH_CKPT=16; WORKERS=2; VIDEOS=8; CAPTIONS=4; WARMUP=2; STEPS=4; LBATCHES=6; SKIP=1
  SMOKE_FLAG=--smoke; SIZES=64x64@12/32; DTYPES=fp32
else
  DEVICE=cuda; BATCH=128; BATCH_CKPT=256; WORKERS=12; VIDEOS=300; CAPTIONS=20; WARMUP=15; STEPS=30; LBATCHES=30; SKIP=5
  SMOKE_FLAG=; SIZES=1000x1000@12/32,4917x4917@64/64; DTYPES=bf16
fi
DATA=${DATA:-/tmp/xclip-bench-msrvtt}
PARTS=${PARTS:-fit loader kernels}

step() {  # step <name> <seconds> <command...>: run under a timeout, output to $OUT/<name>.txt, last line to the table
  local name=$1 seconds=$2; shift 2
  echo "== $name (timeout ${seconds}s): $*"
  local start=$SECONDS
  timeout "$seconds" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  tail -n 4 "$OUT/$name.txt"
  local row
  row=$(grep '^| ' "$OUT/$name.txt" | tail -n 1)
  [ $rc -eq 0 ] || row="| $name | exit $rc$([ $rc -eq 124 ] && echo ' (timeout)') | see $name.txt |"
  if [ -z "$row" ]; then  # no table row: the last line with a rate, else the last plain line
    local line
    line=$(grep -v '^[|= ]' "$OUT/$name.txt" | grep 'clips/s' | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^[|= ]' "$OUT/$name.txt" | grep . | tail -n 1)
    row="| $name | $(echo "$line" | cut -c1-160 | tr '|' '/') | see $name.txt |"
  fi
  echo "${row% |} | $((SECONDS - start)) s |" >> "$SUMMARY"
}

# ---------------------------------------------------------------------------- fit + loader (issue 13, item 5)
if [[ " $PARTS " == *" fit "* || " $PARTS " == *" loader "* ]]; then
  step prepare 30 $PY benchmarks/fit_gpu.py prepare $SMOKE_FLAG --root "$DATA" --videos $VIDEOS --captions $CAPTIONS \
    --batch-size $BATCH --workers $WORKERS
  step cache 45 $PY -m xclip_pl.cli cache --config conf/msrvtt_vit_b32.yaml --config "$DATA/bench.yaml" \
    --num_workers $WORKERS
fi
if [[ " $PARTS " == *" fit "* ]]; then
  step fit_b${BATCH} 125 $PY benchmarks/fit_gpu.py fit $SMOKE_FLAG --root "$DATA" --batch-size $BATCH \
    --workers $WORKERS --warmup $WARMUP --steps $STEPS --json "$OUT/fit_b${BATCH}.json"
  step fit_b${BATCH_CKPT}_ckpt 125 $PY benchmarks/fit_gpu.py fit $SMOKE_FLAG --root "$DATA" --batch-size $BATCH_CKPT \
    --checkpointing --workers $WORKERS --warmup $WARMUP --steps $STEPS --json "$OUT/fit_b${BATCH_CKPT}_ckpt.json"
fi
if [[ " $PARTS " == *" loader "* ]]; then
  step loader 30 $PY benchmarks/fit_gpu.py loader $SMOKE_FLAG --root "$DATA" --batch-size $BATCH --workers $WORKERS \
    --skip $SKIP --batches $LBATCHES --json "$OUT/loader.json"
fi

# ------------------------------------------------------------------------------------ kernels (issue 5)
if [[ " $PARTS " == *" kernels "* ]]; then
  # 60 s: on CPU (--smoke) the first call builds the CPU kernel (~20 s); on a GPU it returns at once
  step auto_backend 60 $PY -c "
import torch
from xclip_pl.model.similarity.backends import select_backend
device = torch.device('$DEVICE')
picks = ', '.join(f'{str(d)[6:]}: {select_backend(\"auto\", device, d, False).name}' for d in (torch.bfloat16, torch.float32))
print(f'| eval_kernel auto | {device.type}, evaluation (no grad) | {picks} |')"
  if [ "$SMOKE" = 1 ]; then  # the kernels' tests run in make test (Triton's interpreter); here: they collect
    step pytest 60 $PY -m pytest -q -p no:cacheprovider --collect-only tests/test_triton_kernel.py tests/test_similarity.py tests/test_backends.py
    echo "| triton_sweep | skipped: needs CUDA |" >> "$SUMMARY"
  else
    step pytest 70 $PY -m pytest -q -p no:cacheprovider tests/test_triton_kernel.py tests/test_similarity.py tests/test_backends.py
    step triton_sweep 60 $PY benchmarks/triton_sweep.py --sizes $SIZES --tiles 4096,8192 --level1-warps 4,8 --runs 3
  fi
  step similarity 60 $PY benchmarks/similarity.py --device $DEVICE --sizes $SIZES --dtypes $DTYPES --kernel auto,fused \
    --compile off --runs 3 --baseline-runs 1
fi

# ------------------------------------------------------------------------ optional: ViT-L/14 FSDP recipe, one GPU
if [[ " $PARTS " == *" fsdp "* ]]; then
  [ -f "$DATA/bench.yaml" ] || step prepare 30 $PY benchmarks/fit_gpu.py prepare $SMOKE_FLAG --root "$DATA" \
    --videos $VIDEOS --captions $CAPTIONS --batch-size 8 --workers $WORKERS
  if [ "$SMOKE" = 1 ]; then FSDP_SIZE=(--model.model.init_args.clip tiny --model.model.init_args.temporal_layers 1
    --data.init_args.image_size 32 --data.init_args.max_frames 3 --data.init_args.max_words 16
    --trainer.accelerator cpu --trainer.precision 32-true)
  else FSDP_SIZE=(--model.model.init_args.clip random-vit-l-14); fi
  step fsdp_l14 150 $PY -m xclip_pl.cli fit --config conf/msrvtt_vit_l14_fsdp.yaml "${FSDP_SIZE[@]}" \
    --data.init_args.root "$DATA" --data.init_args.batch_size 16 --data.init_args.num_workers $WORKERS \
    --trainer.devices 1 --trainer.max_steps 5 --trainer.limit_val_batches 0 --trainer.logger false \
    --trainer.default_root_dir "$DATA/runs-fsdp" --test_after_fit false
fi

echo
echo "| step | configuration | result | wall |"
echo "|---|---|---|---:|"
cat "$SUMMARY"
cp "$SUMMARY" "$OUT/summary.txt"
