// LoRA's backward products over gy in one pass (sm_90a: TMA, mbarriers; mma.sync m16n8k16 bf16, fp32 accumulation):
//
//   gyB = gy B        [M, r]  (bf16: the dx update's L, and (gy B)ᵀ x's G)
//   gb  = s · gyᵀ xa  [N, r]
//
// selected with OWLET_LORA_GY=pass (lora.cu; session 18, emulated only until a GPU runs it). Why: through cuBLAS the
// two read gy (M × N bf16) once each — 23.6 and 21.8 + 4.1 µs (its split-K reduction) for an 8192 × 4096 gy on an H200
// (bench/results/gpu-2026-11-27-h200-s17-call2/ncu/ncu_lora.txt), each well below the copy rate; here gy is read
// once, ≈ 16–18 µs at the copy rate, plus gb's partial sums (below).
//
// A block owns 64 rows of gy and sweeps its columns in 64-wide tiles: warp 4 lane 0 copies each 64 × 64 tile by TMA
// into a ring of kStages stages (128-byte swizzle, "full" and "empty" mbarriers, the empty one counting the four
// consumer warps); consumer warp w (0–3), per tile:
//   gyB: rows 16w..16w+15 of the block × the tile's 64 columns (4 k16 steps, A by ldmatrix from the tile, B = Bᵀ's
//        pairs from global memory, r × N, L1/L2-resident, loaded a tile ahead), accumulated in registers over every tile — the warp's rows
//        are complete at the end, written as bf16;
//   gb:  the tile's columns 16w..16w+15 × the block's 64 rows (A = the tile transposed, ldmatrix.trans; B = xa's rows
//        of the block, loaded once into registers), one partial sum per block into ws [blocks, r, N] (fp32), which
//        lora_mma.cuh's cols_finish_kernel adds up in block order (deterministic) times s into gb.
// Rows past M and columns past N come in as zeros (the TMA fills them; xa's and Bᵀ's are zeroed by hand), so M and N
// need no multiple of the tile; N a multiple of 8 (16-byte rows, the TMA's rule) and 16-byte-aligned starts.
#pragma once
#include <cstdint>
#include <string>

#include "attention_wgmma_ws.cuh"
#include "mma.cuh"
#include "tma.cuh"

namespace owlet::cuda::lora::gy {

constexpr int kRows = 64, kCols = 64, kStages = 8, kThreads = 160;  // 4 consumer warps and the TMA warp
constexpr uint32_t kTileBytes = kRows * kCols * 2;                  // one 64 × 64 bf16 box: 8 KiB

constexpr size_t smem_bytes() { return size_t(kStages) * kTileBytes + 8 * 2 * kStages + 1024; }

struct Args {
  const bf16* bt;  // Bᵀ [R, N]
  const bf16* xa;  // [M, R]
  bf16* gyb;       // [M, R]
  float* ws;       // [blocks, R, N]: each block's Σ over its rows of gy[m][n] xa[m][j]
  int M, N;
};

// The map of gy [M, N] for the kernel: boxes of 64 rows × 64 columns.
inline bool encode_map(const bf16* gy, int M, int N, tma::Map& m, std::string& why) {
  return tma::encode(m, {gy, 1, M, 1, N, N}, kRows, why);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swz(int row, int chunk) { return uint32_t(row * 128 + ((chunk ^ (row & 7)) << 4)); }

template <int R>
__global__ void __launch_bounds__(kThreads) gy_pass_kernel(const Args a, const __grid_constant__ tma::Map gy_map) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  static_assert(R == 8 || R == 16, "ranks 8 and 16");
  constexpr int NT = R / 8;
  using wgmma_ws::mbar_arrive;
  using wgmma_ws::mbar_init;
  using wgmma_ws::mbar_wait;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  const uint32_t sT = (raw + 1023u) & ~1023u, bar_full = sT + kStages * kTileBytes, bar_empty = bar_full + 8 * kStages;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int m0 = int(blockIdx.x) * kRows, tiles = (a.N + kCols - 1) / kCols;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; s++) {
      mbar_init(bar_full + 8 * s, 1);
      mbar_init(bar_empty + 8 * s, 4);
    }
    tma::fence_barrier_init();
  }
  __syncthreads();

  if (warp == 4) {  // ---- the TMA warp ----
    if (lane != 0) return;
    tma::prefetch(&gy_map);
    for (int c = 0; c < tiles; c++) {
      const int s = c % kStages;
      if (c >= kStages) mbar_wait(bar_empty + 8 * s, uint32_t((c / kStages - 1) & 1));
      tma::arrive_expect_tx(bar_full + 8 * s, kTileBytes);
      tma::load_4d(sT + s * kTileBytes, &gy_map, c * kCols, 0, m0, 0, bar_full + 8 * s);
    }
    for (int c = max(0, tiles - kStages); c < tiles; c++)  // every copy has landed before this thread leaves
      mbar_wait(bar_full + 8 * (c % kStages), uint32_t((c / kStages) & 1));
    return;
  }

  // ---- consumers ----
  // gb's B fragments: k-step ks (rows 16ks..16ks+15 of the block), n-tile nt: b0 = xa rows 2t, 2t + 1 at rank
  // 8nt + g, b1 = rows 2t + 8, 2t + 9 (zero past M)
  uint32_t xb[4][NT][2];
  auto xa_at = [&](int row, int j) { return row < a.M ? a.xa[int64_t(row) * R + j] : __float2bfloat16_rn(0.f); };
#pragma unroll
  for (int ks = 0; ks < 4; ks++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int row = m0 + 16 * ks + 2 * t + 8 * h, j = 8 * nt + g;
        const __nv_bfloat162 v = __halves2bfloat162(xa_at(row, j), xa_at(row + 1, j));
        xb[ks][nt][h] = *reinterpret_cast<const uint32_t*>(&v);
      }
  float acc_b[NT][4];  // gyB: rows 16w + g (c0, c1), + 8 (c2, c3); ranks 8nt + 2t, + 1
#pragma unroll
  for (int nt = 0; nt < NT; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc_b[nt][e] = 0.f;
  const mma::RowCol ra = mma::a_rowmajor(lane), rk = mma::a_km(lane);
  // gyB's B fragments of tile c (k-step kk, n-tile nt: Bᵀ's pairs at columns c·64 + 16kk + 2t, + 8; zero past N), read
  // from global memory one tile ahead: loaded right before their products, every tile waited an L2 round trip (the
  // H100's first run of this kernel: ≈ 130 µs for M8192 N4096 where gy's copy takes ≈ 25)
  uint32_t b_cur[4][NT][2], b_next[4][NT][2];
  auto load_b = [&](int c, uint32_t (&b)[4][NT][2]) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      const int col = c * kCols + 16 * kk + 2 * t;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const bf16* brow = a.bt + int64_t(8 * nt + g) * a.N;
        b[kk][nt][0] = col < a.N ? *reinterpret_cast<const uint32_t*>(brow + col) : 0u;
        b[kk][nt][1] = col + 8 < a.N ? *reinterpret_cast<const uint32_t*>(brow + col + 8) : 0u;
      }
    }
  };
  load_b(0, b_cur);

  for (int c = 0; c < tiles; c++) {
    const int s = c % kStages, c0 = c * kCols;
    if (c + 1 < tiles) load_b(c + 1, b_next);
    mbar_wait(bar_full + 8 * s, uint32_t((c / kStages) & 1));
    const uint32_t tile = sT + s * kTileBytes;
    // gyB += gy[rows 16w.., the tile] · B[the tile's columns, ranks]
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      uint32_t af[4];
      mma::ldmatrix_x4(af, tile + swz(16 * warp + ra.row, 2 * kk + (ra.col >> 3)));
#pragma unroll
      for (int nt = 0; nt < NT; nt++) mma::mma_bf16(acc_b[nt], af, b_cur[kk][nt][0], b_cur[kk][nt][1]);
    }
    // this block's partial gb for the tile's columns 16w..16w+15: Σ over the 64 rows of gy[row][col] · xa[row][j]
    float acc_g[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc_g[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
      uint32_t af[4];
      mma::ldmatrix_x4_trans(af, tile + swz(16 * ks + rk.row, 2 * warp + (rk.col >> 3)));
#pragma unroll
      for (int nt = 0; nt < NT; nt++) mma::mma_bf16(acc_g[nt], af, xb[ks][nt][0], xb[ks][nt][1]);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(bar_empty + 8 * s);  // this warp has read the tile
    // c0, c1: column 16w + g, ranks 8nt + 2t, + 1; c2, c3: column + 8
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int n = c0 + 16 * warp + g + 8 * (e >> 1), j = 8 * nt + 2 * t + (e & 1);
        if (n < a.N) a.ws[(int64_t(blockIdx.x) * R + j) * a.N + n] = acc_g[nt][e];
      }
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++) b_cur[kk][nt][0] = b_next[kk][nt][0], b_cur[kk][nt][1] = b_next[kk][nt][1];
  }
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int row = m0 + 16 * warp + g + 8 * h;
    if (row >= a.M) continue;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
      *reinterpret_cast<__nv_bfloat162*>(a.gyb + int64_t(row) * R + 8 * nt + 2 * t) =
          __floats2bfloat162_rn(acc_b[nt][2 * h], acc_b[nt][2 * h + 1]);
  }
#else
  __trap();  // built without sm_90a: the dispatch never launches this (lora.cu)
#endif
}

}  // namespace owlet::cuda::lora::gy
