#!/bin/bash
# Builds and runs the host-emulated kernel tests of test/native: the tensor-core attention kernels, mma.sync and
# wgmma (flash_emu.cc), LoRA's thin-product kernels (lora_thin_emu.cc) and their tensor-core versions
# (lora_mma_emu.cc) and its fused GEMM with the rank-r update (lora_gemm_emu.cc) and one pass over gy for its backward products (lora_gy_pass_emu.cc), AdamW (adamw_emu.cc, bit for bit against the CPU backend's order of operations), the 16-byte
# elementwise maps (vec_map_emu.cc, bit for bit against their functors element by element), the register-resident
# norms (norm_rows_emu.cc, against float64), the column sums of bias and norm gradients (reduce_cols_emu.cc, against
# float64 and bit for bit against their order of additions) and the pitched copy behind concat/slice
# (pitched_copy_emu.cc) and the gradient norm's sum of squares (sum_squares_emu.cc, against float64), executed by a warp emulator and compared with references; the attention kernels' block order on the host (block_order_test.cc); the backward's Δ = rowsum(dO ⊙ O) (attention_delta_emu.cc, against float64); RoPE's 16-byte kernel (rope_emu.cc, bit for bit against the element kernel); the 16-byte row gather and scatter (row_gather_emu.cc); and the pinned staging ring of
# host-to-device copies against a fake stream that runs copies late (staging_ring_test.cc). No GPU needed; needs g++
# and the CUDA headers (cuda_bf16.h).
# Usage: bash scripts/flash-emu.sh [attention-case-name-filter]
# (OWLET_EMU_SEED=n runs other warp schedules than the tests' usual one, seed 42: to look for races it misses)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${CUDA_HOME:-/usr/local/cuda}
mkdir -p build
# (in this order: the quick host tests first, the attention emulation last)
tests=(staging_ring_test block_order_test adamw_emu vec_map_emu norm_rows_emu reduce_cols_emu pitched_copy_emu
  sum_squares_emu attention_delta_emu rope_emu row_gather_emu lora_thin_emu lora_mma_emu lora_gemm_emu lora_gy_pass_emu)
for t in "${tests[@]}" flash_emu; do
  g++ -std=c++17 -O1 -g -Wall -Wno-unknown-pragmas -Wno-psabi -ffp-contract=off -I"$cuda/include" -Inode_modules/node-addon-api \
    "test/native/$t.cc" -o "build/$t"
done
for t in "${tests[@]}"; do "build/$t"; done
build/flash_emu "$@"
# Again with cp.async copies landing at issue (cuda_emu.h eager_copies), on the multi-tile cases of the warp-specialised
# forward: a stage released before a product that reads it has completed then shows as a wrong result.
if [ $# -eq 0 ]; then OWLET_EMU_EAGER_COPIES=1 build/flash_emu "key tiles" | sed 's/^PASS /PASS (copies landing at issue) /'; fi
