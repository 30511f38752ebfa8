#!/bin/bash
# A/B in one call: the trainer benchmark built from the commit before the early release of intermediates (keep)
# against the current one (release), alternating, each in its own process.
cd "$(dirname "$0")/.."
T=$(mktemp -d) && xz -dc .gpu/node.xz >"$T/node" && chmod +x "$T/node" && mkdir -p "$T/lib" && tar -C "$T/lib" -xJf .gpu/lib.tar.xz
export LD_LIBRARY_PATH=$T/lib:/usr/local/cuda/lib64 OWLET_NATIVE_CPU=$PWD/.gpu/owlet_cpu.node OWLET_NATIVE_CUDA=$PWD/.gpu/owlet_cuda.node LAYERS=4
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
for round in 1 2; do
  for v in keep release; do
    f=.gpu/train-check.mjs; [ $v = keep ] && f=.gpu/train-check-keep.mjs
    mkdir -p "$OUT/$v$round"
    OUT=$OUT/$v$round timeout -k 5 90 "$T/node" $f .gpu/owl-tiny --no-tiny 2>&1 | grep BENCH | sed "s/^/$v$round /" | cut -c1-200
  done
done
