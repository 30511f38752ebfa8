// LoRA's thin products on the tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation), for bf16 tensors
// and ranks 8 and 16: each reads its big matrix once, at the memory's pace, with the input dropout applied to the
// elements in registers instead of through a masked copy.
//
//   rows:  out[m][j] = alpha · Σ_k f(X[m][k]) · Wn[j][k]      x Aᵀ (forward, Wn = A), gy B (backward, Wn = Bᵀ)
//   cols:  out[j·oj + k·ok] = alpha · Σ_m G[m][j] · f(X[m][k]) (gy B)ᵀ x → dA,  gyᵀ xa → dB
//
// Why not the CUDA-core kernels of lora_thin.cuh: with R outputs per element each x element costs R fused
// multiply-adds and R reads of the small matrix from L1, which at R = 8–16 is as much work as the 2-byte load itself
// (they measured 1.26–1.70× the frozen linear against cuBLAS's 1.06–1.28× on an H100). On the tensor cores the
// arithmetic is free and the small matrix is read once per 16 × 16 tile.
// Why not cuBLAS (the default): under dropout cuBLAS needs x masked into a copy first (one more write and read of x
// per product), and the N = r products are shapes its kernels are not built for — so it was thought; on an H200
// (2026-11-27) cuBLAS's products were faster all the same (LoRA r8 1.23× the frozen linear against 1.37× here), and
// these kernels stay behind OWLET_LORA=mma.
//
// f(X[m][k]) is the LoRA dropout (kept where hash_u01(seed, m·K + k) >= p, times 1/(1 − p), rounded to bf16: the
// exact value the masked copy of the cuBLAS path holds) or X itself. Both kernels are deterministic: every sum is
// taken in an order fixed by the shape.
//
// rows: one block of 8 warps owns 32 rows of X (two m-tiles per warp) and the warps share out K in chunks of 32
// columns; each lane loads 16 contiguous bytes of a row straight into an A fragment. That is legal because a sum over
// k does not care which k goes to which fragment slot as long as A and B agree: lane (g, t) (g = lane / 4,
// t = lane % 4) holds columns 8t..8t+7 of the chunk, its first four feeding one mma as the logical k pairs (2t, 2t+1)
// and (2t+8, 2t+9), its last four the next mma; Wn's rows are loaded the same way, so the two operands agree. The 8
// warps' partial sums meet in shared memory, added in warp order.
// cols: one block of 4 warps owns a strip of 64 columns and a chunk of rows; 32-row tiles of X and G stream through a
// 4-stage cp.async ring; each warp multiplies its 16 columns, as the transposed A operand (ldmatrix.trans), by G's
// rows (the B operand). Where the rows are split into several chunks, each chunk's sums go to an fp32 workspace and
// cols_finish_kernel adds the chunks in order; the chunk count depends only on the shape.
#pragma once
#include "lora_thin.cuh"
#include "mma.cuh"

namespace owlet::cuda::lora::tc {

using mma::ldmatrix_x4_trans;
using mma::mma_bf16;
using mma::smem_u32;

template <int R> constexpr bool rank_ok() { return R == 8 || R == 16; }

// The two bf16 of a register under the dropout: element lo is index i0, hi is index i1 (of X's flat layout).
__device__ __forceinline__ uint32_t drop_pair(const Drop& d, uint32_t v, int64_t i0, int64_t i1) {
  __nv_bfloat162 p = *reinterpret_cast<__nv_bfloat162*>(&v);
  float lo = __low2float(p), hi = __high2float(p);
  lo = hash_u01_at(d.key, uint64_t(i0)) >= d.p ? lo * d.scale : 0.f;
  hi = hash_u01_at(d.key, uint64_t(i1)) >= d.p ? hi * d.scale : 0.f;
  return mma::pack_bf16(lo, hi);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// ------------------------------------------------------------------------------------------------------------ rows
constexpr int kRowsWarps = 8, kRowsThreads = 32 * kRowsWarps, kRowsPerBlock = 32;

// out[m][j] = alpha · Σ_k f(X[m][k]) Wn[j][k]; X [M, K], Wn [R, K] (bf16, K % 8 == 0, 16-byte-aligned starts).
// Grid: ceil(M / 32) blocks of kRowsThreads; static shared memory 8 · 32 · R floats.
// DROP: whether drop.on (a template parameter so that the hash's 64-bit arithmetic costs the plain product no
// registers).
template <int R, bool DROP>
__global__ void __launch_bounds__(kRowsThreads, 2) rows_kernel(const bf16* X, int64_t M, int64_t K, const bf16* Wn,
                                                               float alpha, Drop drop, FOut out) {
  static_assert(rank_ok<R>(), "ranks 8 and 16");
  constexpr int NT = R / 8;
  __shared__ float red[kRowsWarps][kRowsPerBlock][R];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t m0 = int64_t(blockIdx.x) * kRowsPerBlock;
  float acc[2][NT][4];
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.f;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  const int64_t chunks = (K + 31) / 32;
  // Two chunks per iteration, so each lane has 8 row loads of 16 bytes in flight.
  for (int64_t c0 = warp; c0 < chunks; c0 += 2 * kRowsWarps) {
    uint4 xv[2][2][2], wv[2][NT];  // [chunk][m-tile][row g / g + 8], [chunk][n-tile]
#pragma unroll
    for (int u = 0; u < 2; u++) {
      const int64_t col = (c0 + int64_t(u) * kRowsWarps) * 32 + 8 * t;
      const bool in = c0 + u * kRowsWarps < chunks && col < K;
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int64_t row = m0 + 16 * mt + 8 * h + g;
          xv[u][mt][h] = in && row < M ? *reinterpret_cast<const uint4*>(X + row * K + col) : zero;
        }
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
        wv[u][nt] = in ? *reinterpret_cast<const uint4*>(Wn + int64_t(8 * nt + g) * K + col) : zero;
    }
#pragma unroll
    for (int u = 0; u < 2; u++) {
      const int64_t col = (c0 + int64_t(u) * kRowsWarps) * 32 + 8 * t;
      if constexpr (DROP) {
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const int64_t i = (m0 + 16 * mt + 8 * h + g) * K + col;
            uint4& v = xv[u][mt][h];
            v.x = drop_pair(drop, v.x, i, i + 1);
            v.y = drop_pair(drop, v.y, i + 2, i + 3);
            v.z = drop_pair(drop, v.z, i + 4, i + 5);
            v.w = drop_pair(drop, v.w, i + 6, i + 7);
          }
      }
#pragma unroll
      for (int q = 0; q < 2; q++)  // columns 8t + 4q .. 8t + 4q + 3 of the chunk: one mma's k slice
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          const uint32_t a[4] = {word(xv[u][mt][0], 2 * q), word(xv[u][mt][1], 2 * q), word(xv[u][mt][0], 2 * q + 1),
                                 word(xv[u][mt][1], 2 * q + 1)};
#pragma unroll
          for (int nt = 0; nt < NT; nt++) mma_bf16(acc[mt][nt], a, word(wv[u][nt], 2 * q), word(wv[u][nt], 2 * q + 1));
        }
    }
  }
  // c0, c1 = (row g, columns 2t, 2t + 1) of the tile, c2, c3 = row g + 8.
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) red[warp][16 * mt + g + 8 * (e >> 1)][8 * nt + 2 * t + (e & 1)] = acc[mt][nt][e];
  __syncthreads();
  for (int i = threadIdx.x; i < kRowsPerBlock * R; i += kRowsThreads) {
    const int r = i / R, j = i % R;
    if (m0 + r >= M) continue;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kRowsWarps; w++) s += red[w][r][j];
    out.set((m0 + r) * R + j, alpha * s);
  }
}

// ------------------------------------------------------------------------------------------------------------ cols
constexpr int kColsWarps = 4, kColsThreads = 32 * kColsWarps, kColsStrip = 16 * kColsWarps, kColsStep = 32,
              kColsStages = 4;
// Shared rows padded so the 8 row addresses of an ldmatrix fall on distinct banks: 72 bf16 (144 bytes) for X's
// 64 columns, 24 bf16 (48 bytes) for G's 16.
constexpr int kXLd = kColsStrip + 8, kGLd = 24;
constexpr size_t kColsSmem = size_t(kColsStages) * kColsStep * (kXLd + kGLd) * sizeof(bf16);

// Rows per chunk (a multiple of kColsStep) for X [M, K]: enough chunks that a launch has about 256 blocks, each of
// at least 128 rows. A function of the shape alone, so a product adds in the same order on every card.
inline int64_t cols_rows_per_chunk(int64_t M, int64_t K) {
  const int64_t strips = (K + kColsStrip - 1) / kColsStrip;
  int64_t chunks = (256 + strips - 1) / strips;
  chunks = chunks < 1 ? 1 : chunks;
  const int64_t most = (M + 127) / 128;
  if (chunks > most) chunks = most < 1 ? 1 : most;
  const int64_t rows = (M + chunks - 1) / chunks;
  return (rows + kColsStep - 1) / kColsStep * kColsStep;
}

// Sums of one chunk of rows: with `ws` null, out[j·oj + k·ok] = alpha · Σ; else ws[(chunk · R + j) · K + k] = Σ
// (cols_finish_kernel completes them). X [M, K], G [M, R] (bf16, K % 8 == 0, 16-byte-aligned starts).
// Grid: (ceil(K / 64), ceil(M / rows_per_chunk)) blocks of kColsThreads; dynamic shared memory kColsSmem.
template <int R>
__global__ void __launch_bounds__(kColsThreads) cols_kernel(const bf16* X, int64_t M, int64_t K, const bf16* G,
                                                            int64_t rows_per_chunk, float alpha, Drop drop, FOut out,
                                                            int64_t oj, int64_t ok, float* ws) {
  static_assert(rank_ok<R>(), "ranks 8 and 16");
  constexpr int NT = R / 8;
  OWLET_DYNAMIC_SMEM(smem_raw);
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);             // [stage][32][kXLd]
  bf16* gs = xs + size_t(kColsStages) * kColsStep * kXLd;  // [stage][32][kGLd]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t k0 = int64_t(blockIdx.x) * kColsStrip;
  const int64_t mbeg = int64_t(blockIdx.y) * rows_per_chunk, mend = min(M, mbeg + rows_per_chunk);
  const int steps = int((mend - mbeg + kColsStep - 1) / kColsStep);
  // G's columns R..15 stay zero (rank 8 multiplies a zero second n-tile away); the copies below never write them.
  for (int i = threadIdx.x; i < kColsStages * kColsStep * kGLd; i += kColsThreads) gs[i] = __float2bfloat16_rn(0.f);
  __syncthreads();

  auto issue = [&](int step) {
    const int stage = step % kColsStages;
    const int64_t r0 = mbeg + int64_t(step) * kColsStep;
    // X: 32 rows × 8 pieces of 16 bytes.
    for (int i = threadIdx.x; i < kColsStep * (kColsStrip / 8); i += kColsThreads) {
      const int r = i / (kColsStrip / 8), p = i % (kColsStrip / 8);
      const int64_t row = r0 + r, col = k0 + 8 * p;
      const bool valid = row < mend && col < K;
      mma::cp_async16(smem_u32(xs + (size_t(stage) * kColsStep + r) * kXLd + 8 * p), valid ? X + row * K + col : X,
                      valid);
    }
    // G: 32 rows × R / 8 pieces.
    for (int i = threadIdx.x; i < kColsStep * (R / 8); i += kColsThreads) {
      const int r = i / (R / 8), p = i % (R / 8);
      const int64_t row = r0 + r;
      const bool valid = row < mend;
      mma::cp_async16(smem_u32(gs + (size_t(stage) * kColsStep + r) * kGLd + 8 * p), valid ? G + row * R + 8 * p : G,
                      valid);
    }
  };

  float acc[2][4];  // [n-tile][fragment]: columns (g, g + 8) of this warp's 16, ranks 8·nt + 2t, + 1
#pragma unroll
  for (int nt = 0; nt < 2; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[nt][e] = 0.f;

#pragma unroll
  for (int s = 0; s < kColsStages - 1; s++) {
    if (s < steps) issue(s);
    mma::cp_async_commit();
  }
  const mma::RowCol ra = mma::a_km(lane), rb = mma::b_kn(lane);
  for (int step = 0; step < steps; step++) {
    mma::cp_async_wait<kColsStages - 2>();
    __syncthreads();  // this step's tile has landed for every thread, and the stage refilled below is consumed
    if (step + kColsStages - 1 < steps) issue(step + kColsStages - 1);
    mma::cp_async_commit();
    const int stage = step % kColsStages;
    const bf16* xt = xs + size_t(stage) * kColsStep * kXLd;
    const bf16* gt = gs + size_t(stage) * kColsStep * kGLd;
#pragma unroll
    for (int kk = 0; kk < kColsStep; kk += 16) {
      uint32_t a[4], b[4];
      // A = Xᵀ: row i of A is column 16·warp + i of the strip, its k the tile's rows kk..kk + 15.
      ldmatrix_x4_trans(a, smem_u32(xt + (kk + ra.row) * kXLd + 16 * warp + ra.col));
      ldmatrix_x4_trans(b, smem_u32(gt + (kk + rb.row) * kGLd + rb.col));
      if (drop.on) {
        // a0: column g, rows 2t, 2t + 1; a1: column g + 8; a2, a3: rows 2t + 8, 2t + 9.
        const int64_t row = mbeg + int64_t(step) * kColsStep + kk + 2 * t, col = k0 + 16 * warp + g;
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int64_t i = (row + 8 * (e >> 1)) * K + col + 8 * (e & 1);
          a[e] = drop_pair(drop, a[e], i, i + K);
        }
      }
      mma_bf16(acc[0], a, b[0], b[1]);
      if constexpr (NT == 2) mma_bf16(acc[1], a, b[2], b[3]);
    }
  }
  // c0, c1 = (column g, ranks 2t, 2t + 1), c2, c3 = column g + 8.
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int64_t col = k0 + 16 * warp + g + 8 * (e >> 1);
      const int j = 8 * nt + 2 * t + (e & 1);
      if (col >= K) continue;
      if (ws) ws[(int64_t(blockIdx.y) * R + j) * K + col] = acc[nt][e];
      else out.set(j * oj + col * ok, alpha * acc[nt][e]);
    }
}

// out[j·oj + k·ok] = alpha · Σ_c ws[(c · R + j) · K + k], the chunks added in order (no chunks: zeros).
__global__ void cols_finish_kernel(const float* ws, int64_t chunks, int64_t R, int64_t K, float alpha, FOut out,
                                   int64_t oj, int64_t ok) {
  OWLET_KERNEL_LOOP(i, R * K) {
    const int64_t j = i / K, k = i % K;
    float s = 0.f;
    // (unrolled so that the loads are in flight together; the sum stays in chunk order)
#pragma unroll 8
    for (int64_t c = 0; c < chunks; c++) s += ws[(c * R + j) * K + k];
    out.set(j * oj + k * ok, alpha * s);
  }
}

// cols_finish_kernel four columns per thread (K % 4 == 0, ws 16-byte aligned): the same sums in the same order, with
// 16-byte loads, 16 chunks in flight. Why: with r · K threads of 4-byte loads the finishing of the gy pass's 16 MiB of
// partials ran at 0.9 TB/s on session 19's H100 (18 µs): too few bytes in flight for HBM's latency.
struct ColsJob {  // one cols_finish: out[j·oj + k·ok] = alpha · Σ_c ws[c][j][k], ws [chunks, R, K]
  const float* ws;
  int64_t chunks, R, K;
  float alpha;
  FOut out;
  int64_t oj, ok;
};
__device__ __forceinline__ void cols_finish4_quad(const ColsJob& b, int64_t q) {
  const int64_t i = 4 * q, j = i / b.K, k = i % b.K;
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
  for (int64_t c = 0; c < b.chunks; c++) {
    const float4 v = *reinterpret_cast<const float4*>(b.ws + (c * b.R + j) * b.K + k);
    s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
  }
  b.out.set(j * b.oj + k * b.ok, b.alpha * s.x);
  b.out.set(j * b.oj + (k + 1) * b.ok, b.alpha * s.y);
  b.out.set(j * b.oj + (k + 2) * b.ok, b.alpha * s.z);
  b.out.set(j * b.oj + (k + 3) * b.ok, b.alpha * s.w);
}
__global__ void cols_finish4_kernel(const float* ws, int64_t chunks, int64_t R, int64_t K, float alpha, FOut out,
                                    int64_t oj, int64_t ok) {
  const ColsJob b{ws, chunks, R, K, alpha, out, oj, ok};
  OWLET_KERNEL_LOOP(q, R * K / 4) cols_finish4_quad(b, q);
}
// Two of them in one launch (dx's gb and ga from the kernels that compute their own L): quads of a, then of b.
__global__ void cols_finish4_pair_kernel(ColsJob a, ColsJob b) {
  const int64_t qa = a.R * a.K / 4;
  OWLET_KERNEL_LOOP(q, qa + b.R * b.K / 4) {
    if (q < qa) cols_finish4_quad(a, q);
    else cols_finish4_quad(b, q - qa);
  }
}

// dst[j][n] = src[n][j] as bf16 (src [N, R]), element i = j·N + n of dst.
__device__ __forceinline__ void transpose_at(FIn src, int64_t N, int64_t R, bf16* dst, int64_t i) {
  dst[i] = __float2bfloat16_rn(src[(i % N) * R + i / N]);
}
// Bᵀ for the rows kernel's Wn (B [N, R] is small).
__global__ void transpose_bf16_kernel(FIn src, int64_t N, int64_t R, bf16* dst) {
  OWLET_KERNEL_LOOP(i, R * N) transpose_at(src, N, R, dst, i);
}
// Two of them in one launch (dx's Bᵀ and Aᵀ for the kernels that compute their own L): elements of the first, then of
// the second.
__global__ void transpose2_bf16_kernel(FIn s1, int64_t N1, int64_t R1, bf16* d1, FIn s2, int64_t N2, int64_t R2,
                                       bf16* d2) {
  OWLET_KERNEL_LOOP(i, R1 * N1 + R2 * N2) {
    if (i < R1 * N1) transpose_at(s1, N1, R1, d1, i);
    else transpose_at(s2, N2, R2, d2, i - R1 * N1);
  }
}

}  // namespace owlet::cuda::lora::tc
