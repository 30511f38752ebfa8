// LayerNorm and RMSNorm with the row held in registers and read with 16-byte accesses: x (and the residual) is read
// once, the statistics come from registers, y is written once. The scalar kernels of norm.cu re-read the row for each
// pass and move one 2-byte element per access (rmsnorm 8192 × 4096 bf16: 1370 GB/s against a 2974 GB/s copy on an
// H100). Rows up to kThreads · kPacks packs (4096 bf16 or 2048 f32 elements) whose length is a whole number of packs
// and whose tensors start 16-byte aligned take this path (norm.cu decides); weights and biases are read per element
// (small, cached). G threads per row: a block of kThreads per row, or (G = 32) a warp per row and kThreads / 32 rows
// per block, for rows of up to 32 · kPacks packs: the ViT's 1024-wide rows move 8 KB each, and a block per row spent
// more on its launch share and two block-wide reductions than on that (the residual LayerNorm forward at 4112 × 1024
// ran at 38–66% of the copy rate on an H100). test/native/norm_rows_emu.cc checks both against float64.
#pragma once
#include "common.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::norm_rows {

constexpr int kThreads = 128, kPacks = 4;

template <class T, int G = kThreads>
inline bool fits(int64_t C) {
  constexpr int N = vec::Pack<T>::N;
  return C > 0 && C % N == 0 && C / N <= int64_t(G) * kPacks;
}

// Blocks for `rows` rows at G threads per row.
template <int G>
inline unsigned blocks(int64_t rows) {
  return unsigned((rows + kThreads / G - 1) / (kThreads / G));
}

// The sum over a row's G threads (every one of them gets it); G = kThreads contains __syncthreads.
template <int G>
__device__ __forceinline__ float row_sum(float v, float* scratch) {
  static_assert(G == 32 || G == kThreads, "a warp or the whole block per row");
  if constexpr (G == 32) return warp_sum(v);
  else return block_sum(v, scratch);
}

// y = norm(x (+ res, stored to sum)); LN: (x − mean)·rstd·w + b, RMS: x·rstd·w (HF's order); mean/rstd per row.
template <class T, bool LN, int G = kThreads>
__global__ void __launch_bounds__(kThreads) fwd_kernel(const T* x, const T* res, T* sum, FIn w, bool has_w, FIn b,
                                                       bool has_b, T* y, float* mean_out, float* rstd_out, int64_t rows,
                                                       int64_t C, float eps) {
  __shared__ float scratch[32];
  constexpr int N = vec::Pack<T>::N;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / G) + threadIdx.x / G, packs = C / N, base = row * C;
  const int lane = int(threadIdx.x % G);
  if (row >= rows) return;  // the last block's spare warps (G = 32; a whole block is one row otherwise)
  float v[kPacks][N];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; k++) {
    const int64_t pk = lane + int64_t(k) * G;
    if (pk < packs) {
      vec::load(x + base + pk * N, v[k]);
      if (res) {  // sum = x + res, rounded to T as an add kernel stores it, and normalised as stored
        float r[N];
        vec::load(res + base + pk * N, r);
#pragma unroll
        for (int e = 0; e < N; e++) v[k][e] = to_f(from_f<T>(__fadd_rn(v[k][e], r[e])));
        vec::store(sum + base + pk * N, v[k]);
      }
#pragma unroll
      for (int e = 0; e < N; e++) s += v[k][e];
    }
  }
  const float mean = LN ? row_sum<G>(s, scratch) / float(C) : 0.f;
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; k++) {
    if (lane + int64_t(k) * G < packs) {
#pragma unroll
      for (int e = 0; e < N; e++) {
        float d = v[k][e] - mean;
        ss += d * d;
      }
    }
  }
  const float rstd = 1.f / sqrtf(row_sum<G>(ss, scratch) / float(C) + eps);
#pragma unroll
  for (int k = 0; k < kPacks; k++) {
    const int64_t pk = lane + int64_t(k) * G;
    if (pk < packs) {
      float o[N];
#pragma unroll
      for (int e = 0; e < N; e++) {
        const int64_t j = pk * N + e;
        if constexpr (LN) {
          float t = (v[k][e] - mean) * rstd;
          if (has_w) t *= w[j];
          if (has_b) t += b[j];
          o[e] = t;
        } else {
          o[e] = v[k][e] * rstd * w[j];
        }
      }
      vec::store(y + base + pk * N, o);
    }
  }
  if (lane == 0) {
    if (LN) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// LN: gx = rstd·(g − mean(g) − x̂·mean(g·x̂)), RMS: gx = rstd·(g − x̂·mean(g·x̂)); g = gy·w, x̂ = (x − mean)·rstd
// (RMS: x·rstd); + gx_add (rounded as a separate add would).
template <class T, bool LN, int G = kThreads>
__global__ void __launch_bounds__(kThreads) bwd_kernel(const T* gy, const T* x, FIn w, bool has_w, const float* mean_in,
                                                       const float* rstd_in, T* gx, const T* gx_add, int64_t rows,
                                                       int64_t C) {
  __shared__ float scratch[32];
  constexpr int N = vec::Pack<T>::N;
  const int64_t row = int64_t(blockIdx.x) * (kThreads / G) + threadIdx.x / G, packs = C / N, base = row * C;
  const int lane = int(threadIdx.x % G);
  if (row >= rows) return;
  const float mean = LN ? mean_in[row] : 0.f, rstd = rstd_in[row];
  float g[kPacks][N], xh[kPacks][N];
  float sg = 0.f, sgx = 0.f;
#pragma unroll
  for (int k = 0; k < kPacks; k++) {
    const int64_t pk = lane + int64_t(k) * G;
    if (pk < packs) {
      vec::load(gy + base + pk * N, g[k]);
      vec::load(x + base + pk * N, xh[k]);
#pragma unroll
      for (int e = 0; e < N; e++) {
        const int64_t j = pk * N + e;
        if (has_w) g[k][e] *= w[j];
        xh[k][e] = (xh[k][e] - mean) * rstd;
        sg += g[k][e];
        sgx += g[k][e] * xh[k][e];
      }
    }
  }
  const float mg = LN ? row_sum<G>(sg, scratch) / float(C) : 0.f;
  const float mgx = row_sum<G>(sgx, scratch) / float(C);
#pragma unroll
  for (int k = 0; k < kPacks; k++) {
    const int64_t pk = lane + int64_t(k) * G;
    if (pk < packs) {
      float o[N], a[N];
      if (gx_add) vec::load(gx_add + base + pk * N, a);
#pragma unroll
      for (int e = 0; e < N; e++) {
        float t = rstd * (g[k][e] - mg - xh[k][e] * mgx);
        o[e] = gx_add ? __fadd_rn(to_f(from_f<T>(t)), a[e]) : t;
      }
      vec::store(gx + base + pk * N, o);
    }
  }
}

}  // namespace owlet::cuda::norm_rows
