#!/bin/bash
# Run HERE (the development machine): builds both addons and packs into .gpu/ (git-ignored) everything the GPU
# machine needs to run scripts/gpu/run.sh, which has no Node.js, no npm and no network:
#   check.mjs            scripts/gpu/check.ts bundled by esbuild (ESM, platform node, dependencies inlined)
#   fixture.mjs, nccl-check.mjs, train-check.mjs   the owl-tiny checks (the model, NCCL, the trainer), bundled alike
#   owlet_cpu.node       the CPU addon (the reference); owlet_cuda.node.xz the CUDA addon (sm_90a), xz-packed (12 MB
#                        of kernels as is: run.sh unpacks it)
#   lib.tar.xz           the CPU addon's shared libraries the GPU machine may lack (OpenBLAS and its Fortran runtime)
#   node.xz              this machine's node binary (../shared/gpu/node-xz.sh)
#   peer_torch.py        the PyTorch peer benchmark, run in the same call
# Then it runs the bundle's CPU-only mode here as a smoke test. The whole of .gpu/ must stay well under the
# device tool's 64 MiB.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
export PATH=/usr/local/cuda/bin:$PATH
shared=/work/shared
[ -d "$shared" ] || shared=$(cd "$top/.." && pwd)/shared

# 1. Both addons (configure again so that new source files are globbed in).
npx cmake-js configure >/dev/null
npx cmake-js build
[ -f build/Cuda/owlet_cuda.node ] || { echo "build-bundle: the CUDA addon was not built (nvcc and cuBLAS needed)" >&2; exit 1; }

# 1b. No default Hopper kernel with its wgmma serialised by ptxas for want of registers (C7511; session 19).
bash scripts/gpu/ptxas-serialised.sh

# 2. The check program. bundle SRC OUT [esbuild options]: one ES module with its dependencies inlined, `require`
# defined for the CommonJS ones among them. The programs that reach the trainer (below) pass `stubbed`: its plots
# (sharp, vega) and image decoding (sharp) never run there, so those packages are replaced by a stub
# (scripts/gpu/stub-module.ts), which keeps sharp's native binary out and the files small.
bundle() {
  local src=$1 out=$2
  shift 2
  npx esbuild "$src" --bundle --platform=node --format=esm --target=node20 --log-level=warning "$@" --outfile="$out" \
    --banner:js="import { createRequire as __owletCreateRequire } from 'node:module'; const require = __owletCreateRequire(import.meta.url);"
}
stubbed=(--alias:sharp=./scripts/gpu/stub-module.ts --alias:vega=./scripts/gpu/stub-module.ts
  --alias:vega-lite=./scripts/gpu/stub-module.ts)
mkdir -p .gpu
bundle scripts/gpu/check.ts .gpu/check.mjs

# 3. Addons and the CPU addon's libraries (every dependency outside glibc/libstdc++/libgcc: what Ubuntu may lack).
cp build/Release/owlet_cpu.node .gpu/
rm -f .gpu/owlet_cuda.node
xz -T2 -6 -c build/Cuda/owlet_cuda.node >.gpu/owlet_cuda.node.xz
libs=$(mktemp -d)
ldd build/Release/owlet_cpu.node | awk '/=> \//{print $3}' | while read -r so; do
  case "$(basename "$so")" in
    libc.so*|libm.so*|libstdc++.so*|libgcc_s.so*|libpthread.so*|libdl.so*|ld-linux*) ;;
    *) cp -L "$so" "$libs/" ;;
  esac
done
ls "$libs"
tar -C "$libs" -cJf .gpu/lib.tar.xz .
rm -rf "$libs"

# 4. Node, and the peer.
# (node-xz.sh expects .git to be a directory; in a git worktree it is a file, so pack node the same way here.)
mkdir -p .gpu/owl-tiny && cp "$shared"/fixtures/owl-tiny/* .gpu/owl-tiny/
bundle scripts/gpu/nccl-check.ts .gpu/nccl-check.mjs "${stubbed[@]}"
bundle scripts/gpu/fixture.ts .gpu/fixture.mjs "${stubbed[@]}"
bundle scripts/gpu/train-check.ts .gpu/train-check.mjs "${stubbed[@]}"
# The host's own cost per training step (bench/host_overhead.ts: the benchmark model at tiny widths on the CPU backend),
# so the GPU machine's CPU can be compared with this one's at the JS and N-API work every step does.
bundle bench/host_overhead.ts .gpu/host-overhead.mjs "${stubbed[@]}"
bash "$shared/gpu/node-xz.sh" >/dev/null 2>&1 || { [ -s .gpu/node.xz ] || xz -T2 -3 -c "$(command -v node)" >.gpu/node.xz; }
cp "$shared/gpu/peer_torch.py" .gpu/

du -sh .gpu; ls -la .gpu
total=$(du -sb .gpu | cut -f1)
[ "$total" -lt $((56 * 1024 * 1024)) ] || { echo "build-bundle: .gpu is $total bytes, too close to the 64 MiB the device tool carries" >&2; exit 1; }

# 5. Smoke test here: the CPU parts of the bundle, and the CUDA addon's refusal to load without a GPU.
cuda_node=$(mktemp -d)/owlet_cuda.node
xz -dc .gpu/owlet_cuda.node.xz >"$cuda_node"
OWLET_NATIVE_CPU="$top/.gpu/owlet_cpu.node" OWLET_NATIVE_CUDA="$cuda_node" OUT=$(mktemp -d) \
  node .gpu/check.mjs --cpu-only
OWLET_NATIVE_CPU="$top/.gpu/owlet_cpu.node" OWLET_NATIVE_CUDA="$cuda_node" OUT=$(mktemp -d) \
  node .gpu/train-check.mjs .gpu/owl-tiny --cpu-only --dry-bench
# The NCCL check's dry run through gloo (world size 1): its collectives and the overlapped gradient buckets.
OWLET_NATIVE_CPU="$top/.gpu/owlet_cpu.node" node .gpu/nccl-check.mjs "$top/.gpu/owl-tiny" cpu
OWLET_NATIVE_CPU="$top/.gpu/owlet_cpu.node" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 node .gpu/host-overhead.mjs --stage 2 --steps 3 --split
