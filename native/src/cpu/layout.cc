// Concatenation and slicing along an axis, row gather/scatter, and image patchification.
#include <cstring>

#include "../core/kernels.h"

namespace owlet::kern {

void concat(const std::vector<const Tensor*>& xs, int axis, Tensor& out) {
  AxisView o = around_axis(out, axis);
  size_t es = dtype_size(out.dtype);
  int64_t off = 0;
  for (const Tensor* x : xs) {
    AxisView v = around_axis(*x, axis);
    const char* src = static_cast<const char*>(x->raw());
    char* dst = static_cast<char*>(out.raw());
    size_t chunk = size_t(v.len * v.inner) * es;
    for (int64_t r = 0; r < v.outer; r++)
      std::memcpy(dst + size_t((r * o.len + off) * o.inner) * es, src + size_t(r) * chunk, chunk);
    off += v.len;
  }
}

void slice(const Tensor& x, int axis, int64_t start, Tensor& out) {
  AxisView v = around_axis(x, axis), o = around_axis(out, axis);
  size_t es = dtype_size(x.dtype), chunk = size_t(o.len * o.inner) * es;
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t r = 0; r < v.outer; r++)
    std::memcpy(dst + size_t(r) * chunk, src + size_t((r * v.len + start) * v.inner) * es, chunk);
}

void slice_assign(Tensor& dst, const Tensor& src, int axis, int64_t start, bool accumulate) {
  AxisView d = around_axis(dst, axis), s = around_axis(src, axis);
  int64_t chunk = s.len * s.inner;
  if (!accumulate) {
    size_t es = dtype_size(dst.dtype);
    for (int64_t r = 0; r < d.outer; r++)
      std::memcpy(static_cast<char*>(dst.raw()) + size_t((r * d.len + start) * d.inner) * es,
                  static_cast<const char*>(src.raw()) + size_t(r * chunk) * es, size_t(chunk) * es);
    return;
  }
  float* pd = dst.f32();
  const float* ps = src.f32();
  for (int64_t r = 0; r < d.outer; r++) {
    float* y = pd + (r * d.len + start) * d.inner;
    const float* x = ps + r * chunk;
    for (int64_t j = 0; j < chunk; j++) y[j] += x[j];
  }
}

void gather_rows(const Tensor& src, const Tensor& idx, Tensor& out) {
  int64_t n = idx.numel(), rows = src.rows(), cols = src.cols();
  size_t es = dtype_size(src.dtype), row_bytes = size_t(cols) * es;
  const int32_t* ix = idx.i32();
  for (int64_t i = 0; i < n; i++)
    if (ix[i] < 0 || ix[i] >= rows)
      fail(ErrorKind::Argument, "index " + std::to_string(ix[i]) + " at position " + std::to_string(i) +
                                    (rows ? " is outside 0.." + std::to_string(rows - 1) : std::string(": the table has no rows")));
#pragma omp parallel for if (n * cols > 65536)
  for (int64_t i = 0; i < n; i++)
    std::memcpy(static_cast<char*>(out.raw()) + size_t(i) * row_bytes,
                static_cast<const char*>(src.raw()) + size_t(ix[i]) * row_bytes, row_bytes);
}

void scatter_rows(Tensor& dst, const Tensor& idx, const Tensor& src, bool accumulate) {
  int64_t n = idx.numel(), rows = dst.rows(), cols = dst.cols();
  const int32_t* ix = idx.i32();
  for (int64_t i = 0; i < n; i++)
    if (ix[i] < 0 || ix[i] >= rows)
      fail(ErrorKind::Argument, "index " + std::to_string(ix[i]) + " at position " + std::to_string(i) +
                                    (rows ? " is outside 0.." + std::to_string(rows - 1) : std::string(": the table has no rows")));
  if (!accumulate) {
    size_t es = dtype_size(dst.dtype), row_bytes = size_t(cols) * es;
    for (int64_t i = 0; i < n; i++)
      std::memcpy(static_cast<char*>(dst.raw()) + size_t(ix[i]) * row_bytes,
                  static_cast<const char*>(src.raw()) + size_t(i) * row_bytes, row_bytes);
    return;
  }
  // Sequential over indices (repeats must add up); parallel across columns.
  float* pd = dst.f32();
  const float* ps = src.f32();
  for (int64_t i = 0; i < n; i++) {
    float* y = pd + int64_t(ix[i]) * cols;
    const float* x = ps + i * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) y[j] += x[j];
  }
}

void patchify(const Tensor& img, int p, Tensor& out) {
  int64_t N = img.dim(0), C = img.dim(1), H = img.dim(2), W = img.dim(3);
  int64_t gh = H / p, gw = W / p, feat = C * p * p;
  const float* src = img.f32();
  float* dst = out.f32();
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < N; n++)
    for (int64_t gy = 0; gy < gh; gy++)
      for (int64_t gx = 0; gx < gw; gx++) {
        float* o = dst + ((n * gh + gy) * gw + gx) * feat;
        for (int64_t c = 0; c < C; c++)
          for (int64_t y = 0; y < p; y++) {
            const float* row = src + ((n * C + c) * H + gy * p + y) * W + gx * p;
            std::memcpy(o + (c * p + y) * p, row, size_t(p) * sizeof(float));
          }
      }
}

}  // namespace owlet::kern
