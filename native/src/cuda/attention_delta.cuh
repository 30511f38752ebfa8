// The attention backward's Δ[b, h, i] = Σ_d dO[b, i, h, d] · O[b, i, h, d] (out and dO [B, Tq, H, D] contiguous, Δ
// [B, H, Tq]), computed before the tiled kernels read it.
//   delta_rows_kernel: bf16 rows of D = 64 or 128, D / 8 lanes per row, each reading 16 bytes of dO and of O, the
//     row's sum by shuffles among those lanes — the element-by-element kernel (one warp per row, 2-byte accesses
//     with a dtype branch each) moved the 2 × 67 MB of the ViT's backward at B64 or 2 × 134 MB of LLaMA's at B4 T2048
//     at about half the copy bandwidth (vec_map.cuh's header: that kind of kernel, 1370 against 2974 GB/s).
//   delta_kernel: any float dtypes and head dims, one warp per row (the plain path, f32, unaligned views).
// test/native/attention_delta_emu.cc runs both through the host emulator against float64.
#pragma once
#include <cstdint>

#include "common.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::attn_delta {

constexpr int kThreads = 256;

template <int D>
__global__ void __launch_bounds__(kThreads) delta_rows_kernel(const bf16* dout, const bf16* out, float* delta, int B,
                                                              int Tq, int H) {
  constexpr int G = D / 8;  // lanes per row: a power of two dividing 32
  static_assert(G == 8 || G == 16, "D = 64 or 128");
  const int64_t rows = int64_t(B) * Tq * H, t = int64_t(blockIdx.x) * kThreads + threadIdx.x, row = t / G;
  const int part = int(t % G);
  float s = 0.f;
  if (row < rows) {
    float a[8], b[8];
    vec::load(dout + row * D + part * 8, a);
    vec::load(out + row * D + part * 8, b);
#pragma unroll
    for (int e = 0; e < 8; e++) s += a[e] * b[e];
  }
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);  // every lane takes part
  if (row < rows && part == 0) {
    const int h = int(row % H);
    const int64_t bi = row / H;  // b·Tq + i
    const int i = int(bi % Tq), b = int(bi / Tq);
    delta[(int64_t(b) * H + h) * Tq + i] = s;
  }
}

// One warp per (b, i, h) row.
__global__ void delta_kernel(FIn dout, FIn out, float* delta, int B, int Tq, int H, int D) {
  const int64_t rows = int64_t(B) * Tq * H, warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= rows) return;
  const int64_t base = warp * D;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += dout[base + d] * out[base + d];
  s = warp_sum(s);
  if (lane == 0) {
    const int h = int(warp % H);
    const int64_t bi = warp / H;  // b·Tq + i
    const int i = int(bi % Tq), b = int(bi / Tq);
    delta[(int64_t(b) * H + h) * Tq + i] = s;
  }
}

}  // namespace owlet::cuda::attn_delta
