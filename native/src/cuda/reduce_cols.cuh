// Column sums of values computed per (row, column): the shape of every parameter gradient of a normalisation or a
// bias (sum over tokens). Deterministic: rows are cut into fixed chunks, each chunk summed in a fixed order by one
// block, then the chunk partials summed in a fixed order by a second kernel. No atomics, and the chunking depends
// only on the shape (not on the GPU), so a run repeats bit for bit on any card.
//
// Why this shape: the first version gave each thread one column and walked a chunk's rows one load at a time, so a
// thread had a single load in flight and a 4112 × 1024 bias gradient took 22 µs on an H100 (380 GB/s; 143 of them in
// a stage-1 step, 1.8 ms). Here a thread owns kColsPerLane columns (a warp's loads of one row are contiguous) and
// loads kRowUnroll rows of them before adding: 16 independent loads per thread, in row order within the thread.
// The launcher is reduce_cols_launch.cuh; test/native/reduce_cols_emu.cc checks both kernels under the emulator.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace owlet::cuda::reduce_cols_detail {

constexpr int kLanes = 32;                           // column lanes: a warp
constexpr int kRowWarps = 8;                         // a block's warps, each on its own rows
constexpr int kThreads = kLanes * kRowWarps;
constexpr int kColsPerLane = 4;                      // columns lane, lane + 32, lane + 64, lane + 96 of a tile
constexpr int kTileCols = kLanes * kColsPerLane;
constexpr int kRowUnroll = 4;                        // rows a thread loads before it adds them
constexpr int64_t kRowStep = int64_t(kRowWarps) * kRowUnroll;
constexpr int64_t kMinChunkRows = 2 * kRowStep;      // 64: the partials stay ≤ 1/32 of a bf16 input's bytes
constexpr int kMaxChunks = 2048;                     // grid.y, and the final kernel's loop

struct Plan {
  int chunks;
  int64_t rows_per_chunk;  // a multiple of kRowStep
  int64_t col_tiles;
};

// The chunking of rows × cols (a function of the shape only: the order of additions is the same on every card).
inline Plan plan(int64_t rows, int64_t cols) {
  int64_t per = (rows + kMaxChunks - 1) / kMaxChunks;
  if (per < kMinChunkRows) per = kMinChunkRows;
  per = (per + kRowStep - 1) / kRowStep * kRowStep;
  int64_t chunks = rows > 0 ? (rows + per - 1) / per : 1;
  return Plan{int(chunks), per, (cols + kTileCols - 1) / kTileCols};
}

// partial[k][chunk][col] = sum over the chunk's rows of f(row, col)[k]. Grid: (col_tiles, chunks), kThreads threads.
// Each thread adds its rows (r0 + warp, + kRowWarps, …) in increasing order; the block then adds its warps' sums in
// warp order. F: __device__ void operator()(int64_t row, int64_t col, float (&v)[NOUT]) const.
template <int NOUT, class F>
__global__ void __launch_bounds__(kThreads) partial_kernel(F f, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                                           float* partial, int chunks) {
  __shared__ float sm[NOUT][kRowWarps][kTileCols];
  const int lane = int(threadIdx.x) % kLanes, warp = int(threadIdx.x) / kLanes;
  const int64_t tile0 = int64_t(blockIdx.x) * kTileCols;
  const int chunk = int(blockIdx.y);
  const int64_t r0 = int64_t(chunk) * rows_per_chunk;
  const int64_t r1 = rows < r0 + rows_per_chunk ? rows : r0 + rows_per_chunk;
  float acc[NOUT][kColsPerLane];
#pragma unroll
  for (int k = 0; k < NOUT; k++)
#pragma unroll
    for (int j = 0; j < kColsPerLane; j++) acc[k][j] = 0.f;
  for (int64_t r = r0 + warp; r < r1; r += kRowStep) {
    float v[kRowUnroll][kColsPerLane][NOUT];
#pragma unroll
    for (int u = 0; u < kRowUnroll; u++) {
      const int64_t row = r + int64_t(u) * kRowWarps;
#pragma unroll
      for (int j = 0; j < kColsPerLane; j++) {
        const int64_t col = tile0 + j * kLanes + lane;
        if (row < r1 && col < cols) {
          f(row, col, v[u][j]);
        } else {
#pragma unroll
          for (int k = 0; k < NOUT; k++) v[u][j][k] = 0.f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kRowUnroll; u++)
#pragma unroll
      for (int j = 0; j < kColsPerLane; j++)
#pragma unroll
        for (int k = 0; k < NOUT; k++) acc[k][j] += v[u][j][k];
  }
#pragma unroll
  for (int k = 0; k < NOUT; k++)
#pragma unroll
    for (int j = 0; j < kColsPerLane; j++) sm[k][warp][j * kLanes + lane] = acc[k][j];
  __syncthreads();
  for (int i = int(threadIdx.x); i < NOUT * kTileCols; i += kThreads) {
    const int k = i / kTileCols, c = i % kTileCols;
    const int64_t col = tile0 + c;
    if (col >= cols) continue;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kRowWarps; w++) s += sm[k][w][c];
    partial[(int64_t(k) * chunks + chunk) * cols + col] = s;
  }
}

template <int NOUT>
struct Outs {
  FOut o[NOUT];
  bool present[NOUT];
};

// outs.o[k][col] = sum over chunks of partial[k][chunk][col]. Grid: (ceil(cols / kLanes), NOUT), kThreads threads:
// warp w adds chunks w, w + kRowWarps, … in order, then warp 0 adds the warps' sums in warp order.
template <int NOUT>
__global__ void __launch_bounds__(kThreads) final_kernel(const float* partial, int chunks, int64_t cols, Outs<NOUT> outs) {
  __shared__ float sm[kRowWarps][kLanes];
  const int k = int(blockIdx.y);
  if (!outs.present[k]) return;  // the whole block: before any barrier
  const int lane = int(threadIdx.x) % kLanes, warp = int(threadIdx.x) / kLanes;
  const int64_t col = int64_t(blockIdx.x) * kLanes + lane;
  float s = 0.f;
  if (col < cols) {
    const float* p = partial + int64_t(k) * chunks * cols + col;
#pragma unroll 4
    for (int j = warp; j < chunks; j += kRowWarps) s += p[int64_t(j) * cols];
  }
  sm[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && col < cols) {
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < kRowWarps; w++) t += sm[w][lane];
    outs.o[k].set(col, t);
  }
}

}  // namespace owlet::cuda::reduce_cols_detail
