#!/bin/bash
# Builds and runs the host-emulated kernel tests of test/native: the tensor-core attention kernels, mma.sync and
# wgmma (flash_emu.cc) and LoRA's thin-product kernels (lora_thin_emu.cc), executed by a warp emulator and compared
# with float64 references. No GPU needed; needs g++ and the CUDA headers (cuda_bf16.h).
# Usage: bash scripts/flash-emu.sh [attention-case-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${CUDA_HOME:-/usr/local/cuda}
mkdir -p build
for t in flash_emu lora_thin_emu; do
  g++ -std=c++17 -O1 -g -Wall -Wno-unknown-pragmas -I"$cuda/include" -Inode_modules/node-addon-api \
    "test/native/$t.cc" -o "build/$t"
done
build/lora_thin_emu
build/flash_emu "$@"
