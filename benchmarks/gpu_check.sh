#!/usr/bin/env bash
# One device session: golden fidelity on the GPU, memory caps, and (optionally) the speed suite.
# Usage (CUDA machine, repo root): OUT=/tmp/out bash benchmarks/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ddfm_gpu}; mkdir -p "$OUT"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  echo "## golden fidelity on the GPU (tiny UNet; noise drawn on the CPU)"
  for prec in fp32 bf16; do timeout 120 python3 -m benchmarks.gpu_fidelity --precision $prec; done
  timeout 60 python3 -m benchmarks.gpu_fidelity --attention legacy --cases small_10steps
  echo "## memory"
  timeout ${MEM_TIMEOUT:-200} python3 -m benchmarks.bench_memory
} 2>&1 | tee "$OUT/check.log"
if [ -n "${SUITE:-}" ]; then timeout ${BENCH_TIMEOUT:-400} python3 -m benchmarks.bench_sample --gpu_suite 2>&1 | tee "$OUT/bench.md"; fi
