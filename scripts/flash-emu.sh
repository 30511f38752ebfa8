#!/bin/bash
# Builds and runs test/native/flash_emu.cc: the tensor-core attention kernels executed on the host by a warp
# emulator and compared with a float64 reference (no GPU needed; needs g++ and the CUDA headers for cuda_bf16.h).
# Usage: bash scripts/flash-emu.sh [case-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${CUDA_HOME:-/usr/local/cuda}
out=build/flash_emu
mkdir -p build
g++ -std=c++17 -O1 -g -Wall -Wno-unknown-pragmas -I"$cuda/include" -Inode_modules/node-addon-api \
  test/native/flash_emu.cc -o "$out"
"$out" "$@"
