// The sum of squares of a tensor list in float64 partials, one block per (tensor, chunk) work item (multi_tensor.cuh):
// what sumSquares and stepControl (the gradient norm, every step) read. A tensor whose start is 16-byte aligned is
// read 16 bytes per load (8 bf16 or 4 f32; every chunk starts at a multiple of kChunk elements, so its packs are
// aligned too), the rest element by element: the element-by-element loads with a dtype branch on each ran at about a
// quarter of the copy bandwidth (stage 1's 385M bf16 gradients: 0.64 ms on an H200, 2026-11-27; 16-byte loads: about
// 0.2 expected). Each square is exact in float64 and the partials are summed in a fixed order, so the norm is the
// same from run to run. test/native/sum_squares_emu.cc checks it against float64 through the host emulator.
#pragma once
#include "common.cuh"
#include "multi_tensor.cuh"

namespace owlet::cuda::sumsq {

constexpr int kThreads = 256;

struct ListSlot {
  FOut x;
  int64_t n;
  bool vec;  // 16-byte loads (the start is 16-byte aligned, and OWLET_VEC is not 0)
};

template <class T>
__device__ __forceinline__ double chunk_squares(const T* p, int64_t start, int64_t end) {
  constexpr int N = 16 / int(sizeof(T));
  double acc = 0.0;
  const int64_t packed_end = start + (end - start) / N * N;
  for (int64_t i = start + int64_t(threadIdx.x) * N; i < packed_end; i += int64_t(blockDim.x) * N) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p + i);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int k = 0; k < N; k++) {
      const double v = to_f(e[k]);
      acc += v * v;
    }
  }
  for (int64_t i = packed_end + threadIdx.x; i < end; i += blockDim.x) {
    const double v = to_f(p[i]);
    acc += v * v;
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads) sum_squares_kernel(const ListSlot* slots, const WorkItem* items, double* partial) {
  __shared__ double scratch[32];
  const WorkItem w = items[blockIdx.x];
  const ListSlot s = slots[w.slot];
  const int64_t end = min(s.n, w.start + kChunk);
  double acc = 0.0;
  if (s.vec && s.x.bf) {
    acc = chunk_squares(static_cast<const bf16*>(s.x.p), w.start, end);
  } else if (s.vec) {
    acc = chunk_squares(static_cast<const float*>(s.x.p), w.start, end);
  } else {
    for (int64_t i = w.start + threadIdx.x; i < end; i += blockDim.x) {
      const double v = s.x.get(i);
      acc += v * v;
    }
  }
  acc = block_sum_d(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace owlet::cuda::sumsq
