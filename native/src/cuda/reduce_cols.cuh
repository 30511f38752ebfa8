// Column sums of values computed per (row, column): the shape of every parameter gradient of a normalisation or a
// bias (sum over tokens). Deterministic: rows are cut into fixed chunks, each chunk summed in a fixed order by one
// block, then the chunk partials summed in order by a second kernel. No atomics, so a run repeats bit for bit.
#pragma once
#include <algorithm>

#include "common.cuh"

namespace owlet::cuda {

namespace detail {

constexpr int kColTile = 32, kRowLanes = 8;

// F: __device__ void operator()(int64_t row, int64_t col, float (&v)[NOUT]) const — the values summed over rows.
template <int NOUT, class F>
__global__ void reduce_cols_partial(F f, int64_t rows, int64_t cols, int64_t rows_per_chunk, float* partial,
                                    int chunks) {
  __shared__ float sm[NOUT][kRowLanes][kColTile + 1];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t col = int64_t(blockIdx.x) * kColTile + tx;
  int chunk = blockIdx.y;
  int64_t r0 = int64_t(chunk) * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float acc[NOUT];
#pragma unroll
  for (int k = 0; k < NOUT; k++) acc[k] = 0.f;
  if (col < cols) {
    for (int64_t r = r0 + ty; r < r1; r += kRowLanes) {
      float v[NOUT];
      f(r, col, v);
#pragma unroll
      for (int k = 0; k < NOUT; k++) acc[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < NOUT; k++) sm[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty == 0 && col < cols) {
#pragma unroll
    for (int k = 0; k < NOUT; k++) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < kRowLanes; j++) s += sm[k][j][tx];
      partial[(int64_t(k) * chunks + chunk) * cols + col] = s;
    }
  }
}

template <int NOUT>
struct Outs {
  FOut o[NOUT];
  bool present[NOUT];
};

template <int NOUT>
__global__ void reduce_cols_final(const float* partial, int chunks, int64_t cols, Outs<NOUT> outs) {
  OWLET_KERNEL_LOOP(col, cols) {
#pragma unroll
    for (int k = 0; k < NOUT; k++) {
      if (!outs.present[k]) continue;
      float s = 0.f;
      for (int j = 0; j < chunks; j++) s += partial[(int64_t(k) * chunks + j) * cols + col];
      outs.o[k].set(col, s);
    }
  }
}

}  // namespace detail

// outs[k] (nullptr = not wanted) receives sum over rows of f(row, col)[k], for every col < cols.
template <int NOUT, class F>
void reduce_cols(DeviceContext& c, const char* op, int64_t rows, int64_t cols, F f, FOut* const* outs) {
  if (cols <= 0) return;
  detail::Outs<NOUT> o{};
  for (int k = 0; k < NOUT; k++) {
    o.present[k] = outs[k] != nullptr;
    if (outs[k]) o.o[k] = *outs[k];
  }
  int64_t col_blocks = (cols + detail::kColTile - 1) / detail::kColTile;
  int64_t want = std::max<int64_t>(1, int64_t(c.prop.multiProcessorCount) * 4 / std::max<int64_t>(1, col_blocks));
  int64_t max_chunks = std::max<int64_t>(1, (rows + 63) / 64);  // at least 64 rows per chunk
  int chunks = int(std::min<int64_t>({want, max_chunks, 1024}));
  int64_t rows_per_chunk = rows > 0 ? (rows + chunks - 1) / chunks : 1;
  Tensor partial(DType::F32, {NOUT, chunks, cols}, Device{DeviceKind::CUDA, c.index});
  dim3 grid{unsigned(col_blocks), unsigned(chunks), 1u}, block{unsigned(detail::kColTile), unsigned(detail::kRowLanes), 1u};
  detail::reduce_cols_partial<NOUT, F><<<grid, block, 0, c.stream>>>(f, rows, cols, rows_per_chunk, partial.f32(),
                                                                     chunks);
  check_launch(op);
  detail::reduce_cols_final<NOUT><<<grid_for(c, cols, 256), 256, 0, c.stream>>>(partial.f32(), chunks, cols, o);
  check_launch(op);
}

}  // namespace owlet::cuda
