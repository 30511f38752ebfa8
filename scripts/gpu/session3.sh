#!/bin/bash
# One device call (2026-11-26, session 3): every check and benchmark of run.sh with the op profile of the 7B-sized
# trainer steps, then a JS CPU profile of the same trainer benchmark (where the host's time goes), packed into one
# archive because the device tool returns at most 8 files.
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-results
rm -rf "$R" && mkdir -p "$R"
OUT=$R OWLET_PROFILE_OPS=1 TRAIN_ARGS="" ONLY="${ONLY:-check peer summary fixture nccl train}" bash scripts/gpu/run.sh
if [ -n "${JSPROF:-1}" ]; then
  T=$(mktemp -d) && xz -dc .gpu/node.xz >"$T/node" && chmod +x "$T/node" && mkdir -p "$T/lib" && tar -C "$T/lib" -xJf .gpu/lib.tar.xz
  echo "== JS CPU profile of the trainer benchmark" | tee -a "$R/run.log"
  LD_LIBRARY_PATH=$T/lib:/usr/local/cuda/lib64 OWLET_NATIVE_CPU=$PWD/.gpu/owlet_cpu.node OWLET_NATIVE_CUDA=$PWD/.gpu/owlet_cuda.node \
    OUT=$R/jsprof LAYERS=4 timeout -k 5 120 "$T/node" --cpu-prof --cpu-prof-dir="$R/jsprof" .gpu/train-check.mjs .gpu/owl-tiny --no-tiny \
    >"$R/jsprof.log" 2>&1
  echo "jsprof exit $?" | tee -a "$R/run.log"
fi
tar -C /tmp -czf "${OUT_REAL:-$OUT}/results.tgz" owlet-results
ls -la "$R" "$R/jsprof" 2>/dev/null | head -30
