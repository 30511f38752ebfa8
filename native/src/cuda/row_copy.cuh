// Copies ROWS consecutive rows of a [T, H, D] bf16 sequence (row stride rs elements) into shared memory by 16-byte
// cp.async: the attention kernels' Q, K, V and dO tiles.
//
// Each of THREADS threads always moves the same 16-byte column chunk c = tid mod (D/8), of rows tid / (D/8) + k·R with
// R = THREADS / (D/8). Its shared-memory offsets are then compile-time steps from one per-thread base (in the 128-byte
// swizzle too, when R is a multiple of 8: a row's swizzle depends on the row mod 8 only) and its global address steps
// by R rows, so a chunk costs a compare, the selects of cp.async's source and size, and an add. The loop it replaces,
// `for (c = tid; c < ROWS·D/8; c += THREADS)`, was not unrolled (its trip count depends on tid as far as the compiler
// knows) and recomputed the row, the chunk, a 64-bit row offset and the swizzle for every chunk: 25–30 PTX instructions
// per 16 bytes, about 450 per thread per K/V tile in the Hopper forward at D = 128, more than its softmax.
//
// Rows at or past `limit` are zero-filled without reading anything (cp.async with source size 0, the source pointed
// at `base`), so the products see zeros there, never stale data or NaN.
#pragma once
#include <cstdint>

#include "mma.cuh"

namespace owlet::cuda::rows {

using bf16 = __nv_bfloat16;

// [ROWS][LD] elements, rows padded to LD (the mma.sync kernels: LD = D + 8 keeps their ldmatrix rows off each
// other's banks).
template <int LD>
struct Padded {
  static constexpr int kRowBytes = LD * 2, kRowPeriod = 1;
  template <int ROWS>
  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    return uint32_t(row * LD + chunk * 8) * 2;
  }
};

// The wgmma kernels' 128-byte swizzle (attention_wgmma.cuh describes it): D/64 column blocks of ROWS × 128 bytes;
// chunk k of row r within its block at position k ^ (r mod 8), so rows 8 apart have the same pattern (kRowPeriod).
struct Swizzle128 {
  static constexpr int kRowBytes = 128, kRowPeriod = 8;
  template <int ROWS>
  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    return uint32_t((chunk >> 3) * (ROWS * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
  }
};

// The 16-byte copy itself: cp.async (the warp-specialised forward passes its own, which its emulation defers).
struct CpAsync16 {
  __device__ __forceinline__ void operator()(uint32_t s, const void* g, bool valid) const { mma::cp_async16(s, g, valid); }
};

// Rows [r0, r0 + ROWS) of the sequence at `base` into the tile at shared address `s`; thread `tid` of THREADS.
// UNROLL: the chunks' loop unrolled fully (0) or by that factor (a producer warp with few registers).
template <int ROWS, int D, int THREADS, class Layout, int UNROLL = 0, class Copy = CpAsync16>
__device__ __forceinline__ void copy(uint32_t s, const bf16* base, int64_t rs, int r0, int limit, int tid,
                                     Copy copy16 = {}) {
  constexpr int kChunks = D / 8, kStep = THREADS / kChunks, kIters = (ROWS + kStep - 1) / kStep;
  static_assert(D % 8 == 0 && THREADS % kChunks == 0, "every thread keeps one 16-byte column chunk");
  static_assert(kStep % Layout::kRowPeriod == 0, "a thread's rows must share one layout pattern");
  const int chunk = tid % kChunks, row0 = tid / kChunks;
  const uint32_t s0 = s + Layout::template offset<ROWS>(row0, chunk);
  const bf16* src = base + int64_t(r0 + row0) * rs + chunk * 8;
  const int64_t step = int64_t(kStep) * rs;
  const int left = limit - r0;  // rows of the tile below this one exist
#pragma unroll(UNROLL > 0 ? UNROLL : kIters)
  for (int i = 0; i < kIters; i++, src += step) {
    const int row = row0 + i * kStep;
    if (ROWS % kStep != 0 && row >= ROWS) break;  // only when the threads do not divide the tile evenly
    const bool valid = row < left;
    copy16(s0 + uint32_t(i * kStep * Layout::kRowBytes), valid ? src : base, valid);
  }
}

}  // namespace owlet::cuda::rows
