#!/usr/bin/env bash
# Issue 15 on one CUDA card, at most $TOTAL = 540 s (each step capped, the last skipped when time is
# spent; rerunnable: the compile
# cache in $CACHE makes a rerun's compiles much shorter while the machine stays up):
#   1. fidelity of the fast paths on the golden cases (tiny UNet): bf16 batched, fp32 batched,
#      compiled fp32, compiled fp32 with CUDA graphs (batch 3: per-pair UNet calls inside one step);
#   2. bench_dataset.py, eager bf16 batch 4 beside the release path (batch 1, legacy, fp32), all sets;
#   3. the faithful fp32 path at batch 1 with channels_last, then also with cuDNN's algorithm search (MSRS size);
#   4. compiled bf16 batch 4 (MSRS, M3FD), then with CUDA graphs (reduce-overhead, MSRS).
# Usage (CUDA machine, repo root): OUT=/tmp/out bash benchmarks/gpu_throughput.sh
# Raw tables land in $OUT/results/bench_dataset_<device>_<date>.{md,json}: copy them into
# benchmarks/results/ and the figures into README's "Speed and memory".
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ddfm_gpu}; mkdir -p "$OUT/results"
CACHE=${CACHE:-/tmp/ddfm_inductor}
B=benchmarks/bench_dataset.py
TOTAL=${TOTAL:-540}   # seconds for the whole script: a step gets min(its cap, what is left), or is skipped
capped() {  # capped SECONDS command...: run with a timeout, skipped when under 20 s are left
  local cap=$1; shift
  local left=$((TOTAL - SECONDS))
  if [ "$left" -lt 20 ]; then echo "skipped (time budget spent): $*"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  timeout "$cap" "$@" || echo "(exit $? after at most ${cap} s: $*)"
}
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  echo "## 1. fidelity of the fast paths (tiny UNet, golden cases, noise drawn on the CPU)"
  capped 45 python3 benchmarks/gpu_fidelity.py --precision bf16 --batch 3
  capped 35 python3 benchmarks/gpu_fidelity.py --precision fp32 --batch 3 --batched_unet on --cases flir_10steps
  TORCHINDUCTOR_CACHE_DIR="$CACHE" capped 90 python3 benchmarks/gpu_fidelity.py --compile --cases small_10steps,flir_10steps
  TORCHINDUCTOR_CACHE_DIR="$CACHE" capped 75 python3 benchmarks/gpu_fidelity.py --compile --compile_mode reduce-overhead --batch 3 --cases small_10steps,flir_10steps
  echo "## 2. whole test sets: eager bf16, batch 4, beside the release path"
  capped 110 python3 $B --device cuda --precision bf16 --batch 4 --markdown --out "$OUT/results"
  echo "## 3. faithful fp32, batch 1, channels_last (no TF32)"
  capped 30 python3 $B --device cuda --precision fp32 --batch 1 --channels_last --datasets MSRS --no_release --markdown --out "$OUT/results"
  capped 30 python3 $B --device cuda --precision fp32 --batch 1 --channels_last --cudnn_benchmark --datasets MSRS --no_release --markdown --out "$OUT/results"
  echo "## 4. compiled bf16, batch 4 (compile time printed), then CUDA graphs"
  capped 150 python3 $B --device cuda --precision bf16 --batch 4 --compile --compile_cache "$CACHE" --datasets MSRS,M3FD --no_release --markdown --out "$OUT/results"
  capped 90 python3 $B --device cuda --precision bf16 --batch 4 --compile --compile_mode reduce-overhead --compile_cache "$CACHE" --datasets MSRS --no_release --markdown --out "$OUT/results"
  date -u
} 2>&1 | tee "$OUT/throughput.log"
