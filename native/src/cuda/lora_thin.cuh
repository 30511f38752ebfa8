// The thin products of LoRA (rank R = 4, 8 or 16) as memory-bound kernels that read the big matrix once with
// 16-byte loads, instead of cuBLAS calls on shapes it is not tuned for (N = 8 outputs, or an 8 × 4096 result
// reduced over 8192 rows):
//
//   rows:  out[m][j] = alpha · Σ_k f(X[m][k]) · Wt[k][j]        x Aᵀ (forward), gy B (backward)
//   cols:  acc[j·oj + k·ok] += alpha · Σ_m G[m][j] · f(X[m][k])  (gy B)ᵀ x → dA,  gyᵀ xa → dB
//
// f is the LoRA input dropout (kept where hash_u01(seed, element index of X) >= p, core/hash_u01.h, as the CPU
// backend draws it; scale 1/(1 − p)) or identity.
// Wt and G are small fp32 matrices laid out [k][j] and [m][j] (the caller converts A, B and xa once). `rows` gives
// each warp 4 (R ≤ 8) or 2 rows and reduces across lanes; `cols` gives each block 256 (bf16) or 128 (f32) columns
// and a chunk of rows, reduces across its warps in shared memory and adds into an fp32 accumulator with atomics.
// Two more passes under the same dropout, used whichever way the thin products go: the dropout copy of x, and dx's
// low-rank part added into dx in place (dx_low_rank_kernel, below).
#pragma once
#include "../core/hash_u01.h"
#include "common.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::lora {

struct Drop {
  bool on;
  uint64_t key;  // hash_u01_key(seed)
  float p;
  float scale;  // 1 / (1 − p)
};

// 16-byte packs of T (vec_map.cuh's loads): 8 bf16 or 4 f32.
template <class T> struct Vec16 { static constexpr int n = vec::Pack<T>::N; };
using vec::load;

template <class T>
__device__ __forceinline__ void apply_drop(const Drop& d, int64_t index0, float (&v)[Vec16<T>::n]) {
  if (!d.on) return;
#pragma unroll
  for (int i = 0; i < Vec16<T>::n; i++) v[i] = hash_u01_at(d.key, uint64_t(index0 + i)) >= d.p ? v[i] * d.scale : 0.f;
}

constexpr int kThreads = 256, kWarps = kThreads / 32;

template <int R> constexpr int rows_per_warp() { return R <= 8 ? 4 : 2; }

// out[m][j] = alpha · Σ_k f(X[m][k]) Wt[k][j]; X [M, K] with K % Vec16<T>::n == 0. Grid: ceil(M / (8 · RPW)).
template <class T, int R>
__global__ void __launch_bounds__(kThreads) rows_kernel(const T* X, int64_t M, int64_t K, const float* Wt, float alpha,
                                                        Drop drop, FOut out) {
  constexpr int V = Vec16<T>::n, RPW = rows_per_warp<R>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t m0 = (int64_t(blockIdx.x) * kWarps + warp) * RPW;
  float acc[RPW][R];
#pragma unroll
  for (int r = 0; r < RPW; r++)
#pragma unroll
    for (int j = 0; j < R; j++) acc[r][j] = 0.f;
  for (int64_t k0 = int64_t(lane) * V; k0 < K; k0 += 32 * V) {
    float xv[RPW][V];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
      if (m0 + r < M) {
        load(X + (m0 + r) * K + k0, xv[r]);
        apply_drop<T>(drop, (m0 + r) * K + k0, xv[r]);
      } else {
#pragma unroll
        for (int e = 0; e < V; e++) xv[r][e] = 0.f;
      }
    }
#pragma unroll
    for (int e = 0; e < V; e++) {
      float w[R];
      const float4* wp = reinterpret_cast<const float4*>(Wt + (k0 + e) * R);
#pragma unroll
      for (int q = 0; q < R / 4; q++) {
        float4 f = wp[q];
        w[4 * q] = f.x;
        w[4 * q + 1] = f.y;
        w[4 * q + 2] = f.z;
        w[4 * q + 3] = f.w;
      }
#pragma unroll
      for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int j = 0; j < R; j++) acc[r][j] = fmaf(xv[r][e], w[j], acc[r][j]);
    }
  }
#pragma unroll
  for (int r = 0; r < RPW; r++)
#pragma unroll
    for (int j = 0; j < R; j++) acc[r][j] = warp_sum(acc[r][j]);
  // Lane (r·R + j) mod 32 writes element (r, j), so the stores spread over the warp.
#pragma unroll
  for (int r = 0; r < RPW; r++)
#pragma unroll
    for (int j = 0; j < R; j++)
      if (lane == (r * R + j) % 32 && m0 + r < M) out.set((m0 + r) * R + j, alpha * acc[r][j]);
}

// acc[j·oj + k·ok] += alpha · Σ_{m in this block's chunk} G[m][j] · f(X[m][k]). Grid: (ceil(K / (32·V)), chunks);
// dynamic shared memory: 32·V·R floats. X [M, K] with K % V == 0.
template <class T, int R>
__global__ void __launch_bounds__(kThreads) cols_kernel(const T* X, int64_t M, int64_t K, const float* G,
                                                        int64_t rows_per_chunk, float alpha, Drop drop, float* acc_out,
                                                        int64_t oj, int64_t ok) {
  constexpr int V = Vec16<T>::n, CB = 32 * V;
  OWLET_DYNAMIC_SMEM(smem_raw);
  float* red = reinterpret_cast<float*>(smem_raw);  // [R][V][32]: lane-minor, so the atomics below do not collide on banks
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t k0 = int64_t(blockIdx.x) * CB + int64_t(lane) * V;
  const int64_t mbeg = int64_t(blockIdx.y) * rows_per_chunk, mend = min(M, mbeg + rows_per_chunk);
  for (int i = threadIdx.x; i < CB * R; i += kThreads) red[i] = 0.f;
  float acc[V][R];
#pragma unroll
  for (int e = 0; e < V; e++)
#pragma unroll
    for (int j = 0; j < R; j++) acc[e][j] = 0.f;
  if (k0 < K) {
    for (int64_t m = mbeg + warp; m < mend; m += kWarps) {
      float xv[V], g[R];
      load(X + m * K + k0, xv);
      apply_drop<T>(drop, m * K + k0, xv);
      const float4* gp = reinterpret_cast<const float4*>(G + m * R);
#pragma unroll
      for (int q = 0; q < R / 4; q++) {
        float4 f = gp[q];
        g[4 * q] = f.x;
        g[4 * q + 1] = f.y;
        g[4 * q + 2] = f.z;
        g[4 * q + 3] = f.w;
      }
#pragma unroll
      for (int e = 0; e < V; e++)
#pragma unroll
        for (int j = 0; j < R; j++) acc[e][j] = fmaf(g[j], xv[e], acc[e][j]);
    }
  }
  __syncthreads();  // red[] zeroed
  if (k0 < K) {
#pragma unroll
    for (int e = 0; e < V; e++)
#pragma unroll
      for (int j = 0; j < R; j++) atomicAdd(&red[(j * V + e) * 32 + lane], acc[e][j]);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < CB * R; i += kThreads) {
    int l = i % 32, e = (i / 32) % V, j = i / (32 * V);
    int64_t k = int64_t(blockIdx.x) * CB + l * V + e;
    if (k < K) atomicAdd(acc_out + j * oj + k * ok, alpha * red[i]);
  }
}

// Wt[k][j] = A[j][k] as fp32, for A [R, K] of any float dtype.
__global__ void transpose_f32_kernel(FIn a, int64_t R, int64_t K, float* wt) {
  OWLET_KERNEL_LOOP(i, R * K) {
    int64_t k = i / R, j = i - k * R;
    wt[i] = a[j * K + k];
  }
}

// The low-rank part of LoRA's dx under input dropout, added into dx in place:
//   gx[m][k] += alpha · f(m, k) · Σ_j G[m][j] · At[j][k]
// with f the dropout's keep-and-scale of element (m, k) of x (the same mask as the forward's: gx has x's shape) —
// one pass over gx after the base GEMM wrote gy W there, instead of writing s·(gy B)·A to a temporary, masking it
// into gx and reading gx once more in the base GEMM's beta = 1 epilogue. G [M][R] and At [R][K] fp32 (small: the
// caller converts gy B and A once). gx [M, K] in T with K % Vec16<T>::n == 0.
// Each thread owns one 16-byte pack of columns (k0 .. k0 + V − 1) over a run of rows (dx_low_rank_grid): its R × V
// values of At are loaded once, 16 bytes at a time, and stay in registers; each row's G is R / 4 16-byte loads of one
// address across the warp. (Until session 17 a thread took one pack of one row and read At's R × V values as scalar
// loads each time: 64 loads of 4 bytes per 16 bytes of gx at R = 8, 140 µs for a 4096 × 4096 bf16 gx on an H200 —
// ~0.5 TB/s, where the pass moves 64 MB.) The sums are formed in the same order as before: the same bits.
// Rows go kDxRows at a time, their loads (gx's packs, G's rows) issued before any of their stores: one row after
// another, each waiting on its own loads, the pass took 42 µs on the H200 (session 17's second call, ≈ 1.5 TB/s).
// (2: 102 registers at R = 8 in bf16, two blocks of 256 threads per SM as before; 4 took 166, one block per SM.)
// The third call ran the two-row form without Nsight Compute: the LoRA-under-dropout benchmark line did not move
// (1.506× the frozen linear against 1.491×), so what it changed in the kernel's own time is not known yet.
constexpr int kDxRows = 2;
template <class T, int R>
__global__ void __launch_bounds__(kThreads) dx_low_rank_kernel(T* __restrict__ gx, int64_t M, int64_t K,
                                                               const float* __restrict__ G,
                                                               const float* __restrict__ At, float alpha, Drop drop,
                                                               int64_t rows_per_block) {
  static_assert(R % 4 == 0, "G's rows as 16-byte loads");
  constexpr int V = Vec16<T>::n;
  const int64_t k0 = (int64_t(blockIdx.x) * kThreads + threadIdx.x) * V;
  if (k0 >= K) return;
  float a[R][V];
#pragma unroll
  for (int j = 0; j < R; j++)
#pragma unroll
    for (int e = 0; e < V; e += 4) {
      const float4 f = *reinterpret_cast<const float4*>(At + j * K + k0 + e);
      a[j][e] = f.x, a[j][e + 1] = f.y, a[j][e + 2] = f.z, a[j][e + 3] = f.w;
    }
  const int64_t m0 = int64_t(blockIdx.y) * rows_per_block, m1 = m0 + rows_per_block < M ? m0 + rows_per_block : M;
  for (int64_t mb = m0; mb < m1; mb += kDxRows) {
    float g[kDxRows][R], cur[kDxRows][V];
#pragma unroll
    for (int u = 0; u < kDxRows; u++) {
      const int64_t m = mb + u;
      if (m < m1) {
#pragma unroll
        for (int j = 0; j < R; j += 4) {
          const float4 f = *reinterpret_cast<const float4*>(G + m * R + j);
          g[u][j] = f.x, g[u][j + 1] = f.y, g[u][j + 2] = f.z, g[u][j + 3] = f.w;
        }
        load(gx + m * K + k0, cur[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kDxRows; u++) {
      const int64_t m = mb + u;
      if (m < m1) {
        float acc[V];
#pragma unroll
        for (int e = 0; e < V; e++) {
          float s = 0.f;
#pragma unroll
          for (int j = 0; j < R; j++) s = fmaf(g[u][j], a[j][e], s);
          acc[e] = s;
        }
        apply_drop<T>(drop, m * K + k0, acc);
#pragma unroll
        for (int e = 0; e < V; e++) cur[u][e] = fmaf(alpha, acc[e], cur[u][e]);
        vec::store(gx + m * K + k0, cur[u]);
      }
    }
  }
}

// dx_low_rank_kernel's launch: blocks of kThreads column packs (x) by runs of rows (y), about `want` blocks in all
// (the rows split no finer than one per block).
struct DxGrid {
  unsigned col_blocks, row_blocks;
  int64_t rows_per_block;
};
inline DxGrid dx_low_rank_grid(int64_t M, int64_t K, int V, int64_t want) {
  const int64_t cols = ((K / V) + kThreads - 1) / kThreads;
  int64_t rows = (want + cols - 1) / cols;
  rows = rows < 1 ? 1 : rows > M ? M : rows;
  const int64_t per = (M + rows - 1) / rows;
  return {unsigned(cols), unsigned((M + per - 1) / per), per};
}

// y = drop(x) with 16-byte accesses: LoRA's input dropout as a copy (the forward's x Aᵀ and dA read it through
// cuBLAS), n elements of which the first n − n % V in packs, the rest one by one.
template <class T>
__global__ void __launch_bounds__(kThreads) dropout_copy_kernel(const T* x, T* y, int64_t n, Drop drop) {
  constexpr int V = Vec16<T>::n;
  const int64_t packs = n / V, stride = int64_t(blockDim.x) * gridDim.x, first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t q = first; q < packs; q += stride) {
    float v[V];
    load(x + q * V, v);
    apply_drop<T>(drop, q * V, v);
    vec::store(y + q * V, v);
  }
  for (int64_t i = packs * V + first; i < n; i += stride) {
    const float v = to_f(x[i]);
    y[i] = from_f<T>(!drop.on ? v : hash_u01_at(drop.key, uint64_t(i)) >= drop.p ? v * drop.scale : 0.f);
  }
}

}  // namespace owlet::cuda::lora
