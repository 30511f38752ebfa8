// Copies `height` rows of `width` bytes between pitched buffers with 16-byte accesses. Concatenation and slicing
// along an inner axis are such copies with narrow rows (the ViT's q|k|v split: 128-byte rows, 65792 of them per
// layer at 16 images), where cudaMemcpy2DAsync took 33 µs to move 8.4 MB (session 3's profile, H100): about a sixth of
// the bandwidth. layout.cu takes this kernel when the width, both pitches and both starts are multiples of 16 bytes,
// cudaMemcpy2DAsync otherwise. test/native/pitched_copy_emu.cc runs it through the host emulator.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace owlet::cuda {

__global__ void pitched_copy_kernel(uint4* dst, int64_t dpitch16, const uint4* src, int64_t spitch16, int64_t width16,
                                    int64_t height) {
  const int64_t n = width16 * height;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t row = i / width16, col = i - row * width16;
    dst[row * dpitch16 + col] = src[row * spitch16 + col];
  }
}

inline bool pitched_copy_fits(const void* dst, size_t dpitch, const void* src, size_t spitch, size_t width) {
  return (reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | dpitch | spitch | width) % 16 == 0;
}

}  // namespace owlet::cuda
