#!/bin/bash
# One device call (2026-11-26, session 3): every check and benchmark of run.sh (trainer benchmark unprofiled, right
# after the PyTorch peer), then the trainer benchmark again with the per-op profile (OWLET_PROFILE_OPS=1, its own
# process so that the timed steps above carry no profiling wrapper), optionally a JS CPU profile (JSPROF=1); all
# packed into one archive because the device tool returns at most 8 files.
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-results
rm -rf "$R" && mkdir -p "$R"
OUT=$R TRAIN_ARGS="" ONLY="${ONLY:-check peer summary fixture nccl train}" bash scripts/gpu/run.sh
T=$(mktemp -d) && xz -dc .gpu/node.xz >"$T/node" && chmod +x "$T/node" && mkdir -p "$T/lib" && tar -C "$T/lib" -xJf .gpu/lib.tar.xz
export LD_LIBRARY_PATH=$T/lib:/usr/local/cuda/lib64 OWLET_NATIVE_CPU=$PWD/.gpu/owlet_cpu.node OWLET_NATIVE_CUDA=$PWD/.gpu/owlet_cuda.node
echo "== $(date +%T) trainer benchmark with the per-op profile" | tee -a "$R/run.log"
mkdir -p "$R/profile"
OUT=$R/profile OWLET_PROFILE_OPS=1 LAYERS=4 timeout -k 5 120 "$T/node" .gpu/train-check.mjs .gpu/owl-tiny --no-tiny >"$R/profile/train_check.log" 2>&1
echo "profile exit $?" | tee -a "$R/run.log"
grep -E "^(PROFILE step|GEMM paths|BENCH)" "$R/profile/train_check.log" | cut -c1-300
if [ -n "${JSPROF:-}" ]; then
  echo "== $(date +%T) JS CPU profile of the trainer benchmark" | tee -a "$R/run.log"
  OUT=$R/jsprof LAYERS=4 timeout -k 5 120 "$T/node" --cpu-prof --cpu-prof-dir="$R/jsprof" .gpu/train-check.mjs .gpu/owl-tiny --no-tiny \
    >"$R/jsprof.log" 2>&1
  echo "jsprof exit $?" | tee -a "$R/run.log"
fi
tar -C /tmp -czf "$OUT/results.tgz" owlet-results
