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
// (and Bᵀ's r × 64 box beside it) into a ring of kStages stages (128-byte swizzle, "full" and "empty" mbarriers, the
// empty one counting the four consumer warps); consumer warp w (0–3), per tile:
//   gyB: rows 16w..16w+15 of the block × the tile's 64 columns (4 k16 steps, A by ldmatrix from the tile, B = Bᵀ's
//        pairs from the stage, where the TMA copies Bᵀ's r rows of the tile's columns with gy's tile), accumulated in
//        registers over every tile — the warp's rows are complete at the end, written as bf16;
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
constexpr uint32_t kTileBytes = kRows * kCols * 2;                  // one 64 × 64 bf16 box of gy: 8 KiB
// A stage: gy's tile, then Bᵀ's R rows of the tile's 64 columns (128-byte swizzled rows like gy's; 1 or 2 KiB)
template <int R>
constexpr uint32_t kStageBytes = kTileBytes + R * 128;

template <int R>
constexpr size_t smem_bytes() { return size_t(kStages) * kStageBytes<R> + 8 * 2 * kStages + 1024; }

struct Args {
  const bf16* xa;  // [M, R]
  bf16* gyb;       // [M, R]
  float* ws;       // [blocks, R, N]: each block's Σ over its rows of gy[m][n] xa[m][j]
  int M, N;
};
struct Maps {
  tma::Map gy, bt;
};

// The maps of gy [M, N] (boxes of 64 rows × 64 columns) and Bᵀ [R, N] (R rows × 64 columns).
inline bool encode_maps(const bf16* gy, const bf16* bt, int M, int N, int R, Maps& m, std::string& why) {
  return tma::encode(m.gy, {gy, 1, M, 1, N, N}, kRows, why) && tma::encode(m.bt, {bt, 1, R, 1, N, N}, R, why);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t swz(int row, int chunk) { return uint32_t(row * 128 + ((chunk ^ (row & 7)) << 4)); }

template <int R>
__global__ void __launch_bounds__(kThreads) gy_pass_kernel(const Args a, const __grid_constant__ Maps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(OWLET_CUDA_EMULATION)
  static_assert(R == 8 || R == 16, "ranks 8 and 16");
  constexpr int NT = R / 8;
  using wgmma_ws::mbar_arrive;
  using wgmma_ws::mbar_init;
  using wgmma_ws::mbar_wait;
  OWLET_DYNAMIC_SMEM(smem_raw);
  const uint32_t raw = mma::smem_u32(smem_raw);
  constexpr uint32_t kStage = kStageBytes<R>;
  const uint32_t sT = (raw + 1023u) & ~1023u, bar_full = sT + kStages * kStage, bar_empty = bar_full + 8 * kStages;
  const unsigned char* const gT = smem_raw + (sT - raw);
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
    tma::prefetch(&maps.gy), tma::prefetch(&maps.bt);
    for (int c = 0; c < tiles; c++) {
      const int s = c % kStages;
      if (c >= kStages) mbar_wait(bar_empty + 8 * s, uint32_t((c / kStages - 1) & 1));
      tma::arrive_expect_tx(bar_full + 8 * s, kStage);
      tma::load_4d(sT + s * kStage, &maps.gy, c * kCols, 0, m0, 0, bar_full + 8 * s);
      tma::load_4d(sT + s * kStage + kTileBytes, &maps.bt, c * kCols, 0, 0, 0, bar_full + 8 * s);
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

  for (int c = 0; c < tiles; c++) {
    const int s = c % kStages, c0 = c * kCols;
    mbar_wait(bar_full + 8 * s, uint32_t((c / kStages) & 1));
    const uint32_t tile = sT + s * kStage;
    // B fragments (k-step kk, n-tile nt): Bᵀ's pairs at the tile's columns 16kk + 2t and + 8 of rank 8nt + g, from the
    // stage (loaded from global memory next to their products, every tile waited an L2 round trip for them: the H100's
    // first run of this kernel took ≈ 130 µs for M8192 N4096 where gy's copy takes ≈ 25)
    const unsigned char* const tb = gT + s * kStage + kTileBytes;
    // gyB += gy[rows 16w.., the tile] · B[the tile's columns, ranks]
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      uint32_t af[4];
      mma::ldmatrix_x4(af, tile + swz(16 * warp + ra.row, 2 * kk + (ra.col >> 3)));
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(tb + swz(8 * nt + g, 2 * kk) + 4 * t);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(tb + swz(8 * nt + g, 2 * kk + 1) + 4 * t);
        mma::mma_bf16(acc_b[nt], af, b0, b1);
      }
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
