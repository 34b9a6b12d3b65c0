#!/usr/bin/env bash
# The whole-test-set throughput measurement on one CUDA card, at most $TOTAL = 540 s: each step is capped, gets at most what is
# left, and is skipped when under 20 s are left. The parts run in the order given, most needed
# first by default; a rerun can pick the parts a first run did not reach (the compile cache in
# $CACHE makes a rerun's compiles much shorter while the machine stays up).
#   sets      bench_dataset.py, eager bf16 batch 4 beside the release path (batch 1, legacy, fp32), all sets
#   compiled  compiled bf16 batch 4 (MSRS, M3FD; compile time printed)
#   fp32      the faithful fp32 path at batch 1 with channels_last, then also with cuDNN's
#             algorithm search (MSRS size)
#   fidelity  the fast paths on the golden cases (tiny UNet, noise drawn on the CPU): bf16 batched,
#             fp32 batched, compiled fp32, compiled fp32 with CUDA graphs (batch 3: per-pair UNet
#             calls inside one step)
#   graphs    compiled bf16 batch 4 with CUDA graphs (reduce-overhead, MSRS)
# Usage (CUDA machine, repo root): OUT=/tmp/out bash benchmarks/gpu_throughput.sh [PART ...]
#   (default: sets compiled fp32 fidelity graphs)
# Raw tables land in $OUT/results/bench_dataset_<device>_<date>.{md,json}: copy them into
# benchmarks/results/ and the figures into docs/performance.md.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ddfm_gpu}; mkdir -p "$OUT/results"
CACHE=${CACHE:-/tmp/ddfm_inductor}
B=benchmarks.bench_dataset
TOTAL=${TOTAL:-540}   # seconds for the whole script
capped() {  # capped SECONDS command...: run with a timeout, skipped when under 20 s are left
  local cap=$1; shift
  local left=$((TOTAL - SECONDS))
  if [ "$left" -lt 20 ]; then echo "skipped (time budget spent): $*"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  timeout "$cap" "$@" || echo "(exit $? after at most ${cap} s: $*)"
}
part_sets() {
  echo "## whole test sets: eager bf16, batch 4, beside the release path"
  capped 110 python3 -m $B --device cuda --precision bf16 --batch 4 --markdown --out "$OUT/results"
}
part_compiled() {
  echo "## compiled bf16, batch 4 (compile time printed)"
  capped 150 python3 -m $B --device cuda --precision bf16 --batch 4 --compile --compile_cache "$CACHE" --datasets MSRS,M3FD --no_release --markdown --out "$OUT/results"
}
part_fp32() {
  echo "## faithful fp32, batch 1, channels_last (no TF32), without and with cuDNN's algorithm search"
  capped 30 python3 -m $B --device cuda --precision fp32 --batch 1 --channels_last --datasets MSRS --no_release --markdown --out "$OUT/results"
  capped 30 python3 -m $B --device cuda --precision fp32 --batch 1 --channels_last --cudnn_benchmark --datasets MSRS --no_release --markdown --out "$OUT/results"
}
part_fidelity() {
  echo "## fidelity of the fast paths (tiny UNet, golden cases, noise drawn on the CPU)"
  capped 45 python3 -m benchmarks.gpu_fidelity --precision bf16 --batch 3
  capped 35 python3 -m benchmarks.gpu_fidelity --precision fp32 --batch 3 --batched_unet on --cases flir_10steps
  TORCHINDUCTOR_CACHE_DIR="$CACHE" capped 90 python3 -m benchmarks.gpu_fidelity --compile --cases small_10steps,flir_10steps
  TORCHINDUCTOR_CACHE_DIR="$CACHE" capped 75 python3 -m benchmarks.gpu_fidelity --compile --compile_mode reduce-overhead --batch 3 --cases small_10steps,flir_10steps
}
part_graphs() {
  echo "## compiled bf16, batch 4, CUDA graphs"
  capped 90 python3 -m $B --device cuda --precision bf16 --batch 4 --compile --compile_mode reduce-overhead --compile_cache "$CACHE" --datasets MSRS --no_release --markdown --out "$OUT/results"
}
PARTS=("$@"); [ ${#PARTS[@]} -eq 0 ] && PARTS=(sets compiled fp32 fidelity graphs)
for part in "${PARTS[@]}"; do
  declare -F "part_$part" >/dev/null || { echo "unknown part $part: use sets compiled fp32 fidelity graphs" >&2; exit 2; }
done
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"
  for part in "${PARTS[@]}"; do "part_$part"; done
  date -u
} 2>&1 | tee "$OUT/throughput.log"
