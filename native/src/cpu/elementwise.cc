// Elementwise add/mul/scale with suffix broadcasting, axpy, and column sums (bias gradients).
#include <vector>

#include "../core/kernels.h"

namespace owlet::kern {

static constexpr int64_t kParallelMin = 1 << 15;

void add(const Tensor& a, const Tensor& b, Tensor& out, float alpha, float beta) {
  const float *pa = a.f32(), *pb = b.f32();
  float* po = out.f32();
  int64_t n = a.numel(), m = b.numel();
  if (m == n) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) po[i] = alpha * pa[i] + beta * pb[i];
    return;
  }
  int64_t rows = n / m;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* x = pa + r * m;
    float* y = po + r * m;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) y[j] = alpha * x[j] + beta * pb[j];
  }
}

void mul(const Tensor& a, const Tensor& b, Tensor& out) {
  const float *pa = a.f32(), *pb = b.f32();
  float* po = out.f32();
  int64_t n = a.numel(), m = b.numel();
  int64_t rows = n / m;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* x = pa + r * m;
    float* y = po + r * m;
#pragma omp simd
    for (int64_t j = 0; j < m; j++) y[j] = x[j] * pb[j];
  }
}

void scale(const Tensor& a, float s, Tensor& out) {
  const float* pa = a.f32();
  float* po = out.f32();
  int64_t n = a.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) po[i] = s * pa[i];
}

void axpy(Tensor& y, const Tensor& x, float alpha) {
  float* py = y.f32();
  const float* px = x.f32();
  int64_t n = y.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) py[i] += alpha * px[i];
}

void sum_rows(const Tensor& x, Tensor& out) {
  int64_t cols = out.numel(), rows = x.numel() / cols;
  const float* px = x.f32();
  float* po = out.f32();
  // Column blocks per thread; rows summed in order so the result does not depend on the thread count.
#pragma omp parallel for if (x.numel() > kParallelMin)
  for (int64_t c0 = 0; c0 < cols; c0 += 256) {
    int64_t c1 = std::min(cols, c0 + 256);
    std::vector<double> acc(size_t(c1 - c0), 0.0);
    for (int64_t r = 0; r < rows; r++) {
      const float* row = px + r * cols;
      for (int64_t c = c0; c < c1; c++) acc[size_t(c - c0)] += row[c];
    }
    for (int64_t c = c0; c < c1; c++) po[c] = float(acc[size_t(c - c0)]);
  }
}

}  // namespace owlet::kern
