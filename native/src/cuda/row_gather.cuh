// Row gather and scatter-copy (gatherRows: embedding lookup; scatterRows without accumulation) with 16-byte
// accesses: rows whose bytes are a multiple of 16 (and 16-byte-aligned tensors: the caller checks) move as uint4
// chunks, a block per row at a time, so a thread's index is its row's and no per-element division is left (the
// element kernels of layout.cu divide a 64-bit element index by the row length for every 2-byte element). An index
// out of range raises the deferred error (runtime.h: the caller passes its code) and zeroes the gathered row or
// skips the scattered one, as there.
// test/native/row_gather_emu.cc runs them through the host emulator against a plain loop.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace owlet::cuda::rows16 {

constexpr int kThreads = 128;

// out[i] = src[idx[i]] for i < n; rows of c16 chunks; *err = code for an index out of range.
__global__ void gather_kernel(const uint4* src, const int32_t* idx, uint4* out, int64_t n, int64_t rows, int64_t c16,
                              int* err, int code) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int32_t r = idx[i];
    const bool ok = r >= 0 && r < rows;
    if (!ok && threadIdx.x == 0) *err = code;
    for (int64_t c = threadIdx.x; c < c16; c += blockDim.x)
      out[i * c16 + c] = ok ? src[int64_t(r) * c16 + c] : uint4{0, 0, 0, 0};
  }
}

// dst[idx[i]] = src[i] for i < n.
__global__ void scatter_kernel(uint4* dst, const int32_t* idx, const uint4* src, int64_t n, int64_t rows, int64_t c16,
                               int* err, int code) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int32_t r = idx[i];
    if (r < 0 || r >= rows) {
      if (threadIdx.x == 0) *err = code;
      continue;
    }
    for (int64_t c = threadIdx.x; c < c16; c += blockDim.x) dst[int64_t(r) * c16 + c] = src[i * c16 + c];
  }
}

}  // namespace owlet::cuda::rows16
