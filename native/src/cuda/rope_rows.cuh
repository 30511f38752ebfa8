// Rotary position embedding kernels (rope.cu): HF rotate-half on [B, T, H, D], for d < D/2
//   y[d] = x[d]·cos − x[d + D/2]·sin,   y[d + D/2] = x[d + D/2]·cos + x[d]·sin,
// one block per token (b, t), which first tabulates its D/2 cos/sin pairs in shared memory (core/rope_angle.h's fp32
// angles, cos/sin in float64 rounded once); sign −1 rotates back (the backward).
//   rope_vec_kernel: x and y of one dtype with 16-byte-aligned rows, D/2 a multiple of a pack (8 bf16 / 4 f32): each
//     thread rotates a pack of the first half and the matching pack of the second, 16-byte loads and stores. The
//     element kernel moved LLaMA's [2, 2048, 32, 128] (2 × 33.5 MB) in ≈ 44 µs of an H200's device time (session 12's
//     profile, ≈ 1.5 TB/s): the 2-byte accesses through FIn/FOut (vec_map.cuh's header: about half the copy
//     bandwidth).
//   rope_kernel: any dtypes, element by element.
// test/native/rope_emu.cc runs both through the host emulator: the same bits.
#pragma once
#include <cstdint>

#include "../core/rope_angle.h"
#include "common.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::rope {

constexpr int kThreads = 128;

__device__ __forceinline__ void tabulate(float* table, int64_t t, int64_t D, int64_t pos0, double theta, float sign) {
  const int64_t D2 = D / 2;
  for (int64_t d = threadIdx.x; d < D2; d += blockDim.x) {
    double s, c;
    sincos(double(rope_angle(pos0 + t, rope_inv_freq(theta, d, D))), &s, &c);
    table[d] = float(c);
    table[D2 + d] = sign * float(s);
  }
  __syncthreads();
}

__device__ __forceinline__ void rotate(float x1, float x2, float c, float s, float& y1, float& y2) {
  y1 = x1 * c - x2 * s;
  y2 = x2 * c + x1 * s;
}

__global__ void rope_kernel(FIn x, FOut y, int64_t T, int64_t H, int64_t D, int64_t pos0, double theta, float sign) {
  OWLET_DYNAMIC_SMEM(smem);
  float* const table = reinterpret_cast<float*>(smem);  // [D/2] cos, then [D/2] sin
  const int64_t D2 = D / 2, token = blockIdx.x;  // b·T + t
  tabulate(table, token % T, D, pos0, theta, sign);
  const int64_t base = token * H * D;
  for (int64_t p = threadIdx.x; p < H * D2; p += blockDim.x) {
    const int64_t h = p / D2, d = p - h * D2, i1 = base + h * D + d, i2 = i1 + D2;
    float y1, y2;
    rotate(x[i1], x[i2], table[d], table[D2 + d], y1, y2);
    y.set(i1, y1);
    y.set(i2, y2);
  }
}

template <class E>
__global__ void rope_vec_kernel(const E* x, E* y, int64_t T, int64_t H, int64_t D, int64_t pos0, double theta,
                                float sign) {
  constexpr int N = vec::Pack<E>::N;
  OWLET_DYNAMIC_SMEM(smem);
  float* const table = reinterpret_cast<float*>(smem);
  const int64_t D2 = D / 2, token = blockIdx.x, packs = D2 / N;
  tabulate(table, token % T, D, pos0, theta, sign);
  const int64_t base = token * H * D;
  for (int64_t p = threadIdx.x; p < H * packs; p += blockDim.x) {
    const int64_t h = p / packs, d = (p - h * packs) * N, i1 = base + h * D + d, i2 = i1 + D2;
    float x1[N], x2[N], y1[N], y2[N];
    vec::load(x + i1, x1);
    vec::load(x + i2, x2);
#pragma unroll
    for (int e = 0; e < N; e++) rotate(x1[e], x2[e], table[d + e], table[D2 + d + e], y1[e], y2[e]);
    vec::store(y + i1, y1);
    vec::store(y + i2, y2);
  }
}

}  // namespace owlet::cuda::rope
