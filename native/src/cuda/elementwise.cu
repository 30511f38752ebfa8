// Elementwise add/mul/scale with suffix broadcasting, axpy, and column sums (bias gradients). Any mix of f32 and
// bf16 storage; arithmetic in fp32. Column sums are deterministic: fixed row chunks, then a fixed-order sum of the
// chunk partials.
#include "../core/kernels.h"
#include "common.cuh"
#include "reduce_cols_launch.cuh"
#include "vec_map_launch.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

// Suffix broadcasting (b shorter than a): element by element; same-length operands go through vec::map.
__global__ void add_bcast_kernel(FIn a, FIn b, FOut out, int64_t n, int64_t m, float alpha, float beta) {
  OWLET_KERNEL_LOOP(i, n) out.set(i, alpha * a[i] + beta * b[i % m]);
}

__global__ void mul_bcast_kernel(FIn a, FIn b, FOut out, int64_t n, int64_t m) {
  OWLET_KERNEL_LOOP(i, n) out.set(i, a[i] * b[i % m]);
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  int64_t n = a.numel(), m = b.numel();
  if (n == 0) return;
  if (m == n) {
    vec::map("add", {&a, &b}, {&out}, vec::AddScaled{alpha, beta});
    return;
  }
  DeviceContext& c = context_of(out, "add");
  int threads = 256;
  add_bcast_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fin(a, "add", "a"), fin(b, "add", "b"),
                                                                        fout(out, "add", "out"), n, m, alpha, beta);
  check_launch("add");
}

void mul(const Tensor& a, const Tensor& b, Tensor& out) {
  int64_t n = a.numel(), m = b.numel();
  if (n == 0) return;
  if (m == n) {
    vec::map("mul", {&a, &b}, {&out}, vec::Mul{});
    return;
  }
  DeviceContext& c = context_of(out, "mul");
  int threads = 256;
  mul_bcast_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fin(a, "mul", "a"), fin(b, "mul", "b"),
                                                                        fout(out, "mul", "out"), n, m);
  check_launch("mul");
}

void scale(const Tensor& a, float s, Tensor& out) { vec::map("scale", {&a}, {&out}, vec::Scale{s}); }

void axpy(Tensor& y, const Tensor& x, float alpha) { vec::map("axpy", {&y, &x}, {&y}, vec::Axpy{alpha}); }

namespace {
struct ColumnValue {
  FIn x;
  __device__ void operator()(int64_t r, int64_t col, float (&v)[1]) const { v[0] = x[r * cols + col]; }
  int64_t cols;
};
}  // namespace

void sum_rows(const Tensor& x, Tensor& out) {
  int64_t cols = out.numel();
  if (cols == 0) return;
  int64_t rows = x.numel() / cols;
  DeviceContext& c = context_of(out, "sumRows");
  FOut o = fout(out, "sumRows", "out");
  FOut* outs[1] = {&o};
  reduce_cols<1>(c, "sumRows", rows, cols, ColumnValue{fin(x, "sumRows", "x"), cols}, outs);
}

}  // namespace owlet::kern
