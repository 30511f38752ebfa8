// Launching vec_map.cuh's maps from an op: the 16-byte kernel when every operand is f32, or every one bf16, with
// the same length and 16-byte-aligned starts; the element-by-element kernel otherwise. Host side (for .cu files).
#pragma once
#include <cstdint>

#include "common.cuh"
#include "vec_map.cuh"

namespace owlet::cuda::vec {

template <int NI, int NO, class F>
void map(const char* op, const Tensor* const (&in)[NI], Tensor* const (&out)[NO], F f) {
  int64_t n = out[0]->numel();
  if (n == 0) return;
  DeviceContext& c = context_of(*out[0], op);
  constexpr int threads = 256;
  DType dt = out[0]->dtype;
  bool fast = (dt == DType::F32 || dt == DType::BF16) && vec_enabled();
  auto ok = [&](const Tensor& t) {
    return t.dtype == dt && t.numel() == n && aligned16(t);
  };
  for (const Tensor* t : in) fast = fast && ok(*t);
  for (const Tensor* t : out) fast = fast && ok(*t);
  if (fast) {
    Operands<NI, NO> ops{};
    for (int a = 0; a < NI; a++) ops.in[a] = in[a]->raw();
    for (int o = 0; o < NO; o++) ops.out[o] = out[o]->raw();
    int64_t work = n / (dt == DType::BF16 ? Pack<bf16>::N : Pack<float>::N) + 1;
    if (dt == DType::BF16)
      map_kernel<bf16, NI, NO><<<grid_for(c, work, threads), threads, 0, c.stream>>>(ops, n, f);
    else
      map_kernel<float, NI, NO><<<grid_for(c, work, threads), threads, 0, c.stream>>>(ops, n, f);
  } else {
    ScalarOperands<NI, NO> ops{};
    for (int a = 0; a < NI; a++) ops.in[a] = fin(*in[a], op, "input");
    for (int o = 0; o < NO; o++) ops.out[o] = fout(*out[o], op, "output");
    map_scalar_kernel<NI, NO><<<grid_for(c, n, threads), threads, 0, c.stream>>>(ops, n, f);
  }
  check_launch(op);
}

}  // namespace owlet::cuda::vec
