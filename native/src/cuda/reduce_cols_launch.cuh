// Launching reduce_cols.cuh's column sums from an op (host side, for .cu files).
#pragma once
#include <cstdint>

#include "common.cuh"
#include "reduce_cols.cuh"

namespace owlet::cuda {

// outs[k] (nullptr = not wanted) receives sum over rows of f(row, col)[k], for every col < cols.
template <int NOUT, class F>
void reduce_cols(DeviceContext& c, const char* op, int64_t rows, int64_t cols, F f, FOut* const* outs) {
  namespace d = reduce_cols_detail;
  if (cols <= 0) return;
  d::Outs<NOUT> o{};
  for (int k = 0; k < NOUT; k++) {
    o.present[k] = outs[k] != nullptr;
    if (outs[k]) o.o[k] = *outs[k];
  }
  const d::Plan p = d::plan(rows, cols);
  Tensor partial(DType::F32, {NOUT, p.chunks, cols}, Device{DeviceKind::CUDA, c.index});
  d::partial_kernel<NOUT, F><<<dim3(unsigned(p.col_tiles), unsigned(p.chunks), 1u), d::kThreads, 0, c.stream>>>(
      f, rows, cols, p.rows_per_chunk, partial.f32(), p.chunks);
  check_launch(op);
  d::final_kernel<NOUT><<<dim3(unsigned((cols + d::kLanes - 1) / d::kLanes), unsigned(NOUT), 1u), d::kThreads, 0,
                          c.stream>>>(partial.f32(), p.chunks, cols, o);
  check_launch(op);
}

}  // namespace owlet::cuda
