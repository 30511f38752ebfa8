// Elementwise add/mul/scale with suffix broadcasting, axpy, and column sums (bias gradients). Any mix of f32 and
// bf16 storage; arithmetic in fp32. Column sums are deterministic: fixed row chunks, then a fixed-order sum of the
// chunk partials.
#include "../core/kernels.h"
#include "common.cuh"
#include "reduce_cols.cuh"

namespace owlet::kern {

using namespace owlet::cuda;

namespace {

__global__ void add_kernel(FIn a, FIn b, FOut out, int64_t n, int64_t m, float alpha, float beta) {
  if (m == n) {
    OWLET_KERNEL_LOOP(i, n) out.set(i, alpha * a[i] + beta * b[i]);
  } else {
    OWLET_KERNEL_LOOP(i, n) out.set(i, alpha * a[i] + beta * b[i % m]);
  }
}

__global__ void mul_kernel(FIn a, FIn b, FOut out, int64_t n, int64_t m) {
  if (m == n) {
    OWLET_KERNEL_LOOP(i, n) out.set(i, a[i] * b[i]);
  } else {
    OWLET_KERNEL_LOOP(i, n) out.set(i, a[i] * b[i % m]);
  }
}

__global__ void scale_kernel(FIn a, FOut out, int64_t n, float s) {
  OWLET_KERNEL_LOOP(i, n) out.set(i, s * a[i]);
}

__global__ void axpy_kernel(FOut y, FIn x, int64_t n, float alpha) {
  OWLET_KERNEL_LOOP(i, n) y.set(i, y.get(i) + alpha * x[i]);
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  int64_t n = a.numel(), m = b.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(out, "add");
  int threads = 256;
  add_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fin(a, "add", "a"), fin(b, "add", "b"),
                                                                  fout(out, "add", "out"), n, m, alpha, beta);
  check_launch("add");
}

void mul(const Tensor& a, const Tensor& b, Tensor& out) {
  int64_t n = a.numel(), m = b.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(out, "mul");
  int threads = 256;
  mul_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fin(a, "mul", "a"), fin(b, "mul", "b"),
                                                                  fout(out, "mul", "out"), n, m);
  check_launch("mul");
}

void scale(const Tensor& a, float s, Tensor& out) {
  int64_t n = a.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(out, "scale");
  int threads = 256;
  scale_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fin(a, "scale", "a"), fout(out, "scale", "out"),
                                                                    n, s);
  check_launch("scale");
}

void axpy(Tensor& y, const Tensor& x, float alpha) {
  int64_t n = y.numel();
  if (n == 0) return;
  DeviceContext& c = context_of(y, "axpy");
  int threads = 256;
  axpy_kernel<<<grid_for(c, n, threads), threads, 0, c.stream>>>(fout(y, "axpy", "y"), fin(x, "axpy", "x"), n,
                                                                   alpha);
  check_launch("axpy");
}

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
