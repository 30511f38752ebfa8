#!/bin/bash
# The Hopper kernels whose wgmma ptxas serialises (its "C7511: Potential Performance Loss: wgmma.mma_async instructions
# are serialized due to insufficient register resources …"): a kernel so compiled still computes the right numbers,
# in the emulator and on the GPU, but runs its tensor-core products one after another. Session 19 found the fused LoRA
# GEMM's 3-stage variant so compiled, after its timings had been read as the ring's depth; a change to a kernel's
# registers can do the same to a default kernel without any test noticing. This compiles the translation units with
# wgmma kernels for sm_90a (the build's flags) and fails when a kernel outside ALLOWED is serialised.
#   bash scripts/gpu/ptxas-serialised.sh      (≈ 40 s; run by build-bundle.sh)
set -uo pipefail
cd "$(dirname "$0")/../.."
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
# Mangled names (grep -E) of kernels allowed to be serialised: lora_gemm_kernel<*, 3>, the 3-stage ring kept only to
# compare (OWLET_LORA_GEMM_STAGES=3).
ALLOWED='lora_gemm16lora_gemm_kernelILb[01]ELi3E'
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for cu in $(grep -l -e wgmma -e lora_gemm native/src/cuda/*.cu); do
  "$nvcc" -O3 -DNDEBUG -DOWLET_BACKEND_CUDA=1 -DOWLET_HAVE_SM90A=1 --generate-code=arch=compute_90a,code=sm_90a \
    -Xcompiler=-fPIC --expt-relaxed-constexpr -std=c++17 -I node_modules/node-api-headers/include \
    -I node_modules/node-addon-api -c "$cu" -o "$out/o.o" >"$out/log" 2>&1 || { cat "$out/log"; exit 1; }
  while read -r k; do
    if grep -qE "$ALLOWED" <<<"$k"; then
      echo "ptxas serialises (allowed, a comparison variant): $(c++filt <<<"$k")"
    else
      echo "ptxas serialises the wgmma of $(c++filt <<<"$k") ($cu): C7511, too few registers for its pipeline" >&2
      status=1
    fi
  done < <(grep -o "C7511.*function '[^']*'" "$out/log" | sed "s/.*function '\([^']*\)'/\1/" | sort -u)
done
[ "$status" = 0 ] && echo "ptxas: no default kernel's wgmma serialised"
exit $status
