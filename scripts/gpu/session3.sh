#!/bin/bash
# One device call (2026-11-26, session 3): every check and benchmark of run.sh (trainer benchmark unprofiled, right
# after the PyTorch peer), then the trainer benchmark again with the per-op profile (OWLET_PROFILE_OPS=1, its own
# process so that the timed steps above carry no profiling wrapper); packed into one archive because the device tool
# returns at most 8 files.
set -u
cd "$(dirname "$0")/../.."
R=/tmp/owlet-results
rm -rf "$R" && mkdir -p "$R/profile"
OUT=$R ONLY="${ONLY:-check peer summary fixture nccl train}" bash scripts/gpu/run.sh
OUT=$R/profile OWLET_PROFILE_OPS=1 TRAIN_ARGS=--no-tiny ONLY=train bash scripts/gpu/run.sh >/dev/null
grep -E "^(PROFILE step|GEMM paths|BENCH)" "$R/profile/train_check.log" | cut -c1-300
tar -C /tmp -czf "$OUT/results.tgz" owlet-results
