// LayerNorm and RMSNorm (HF LLaMA), forward and backward, over the last axis.
//
// Row statistics are accumulated in double (two passes for the variance: no E[x²] - mean² cancellation) and saved
// as fp32 mean/rstd per row; the backward uses the saved values. Weight/bias gradients are reduced over rows in a
// fixed order — per-chunk partial sums over row chunks whose boundaries depend only on the row count, then summed
// chunk by chunk — so they are bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/kernels.h"

namespace owlet::kern {

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // elements; below this a thread team costs more than it saves
constexpr int64_t kMaxChunks = 32;         // row chunks for deterministic parameter-gradient reduction
constexpr int64_t kMinChunkRows = 8;

int64_t chunk_count(int64_t rows) { return std::max<int64_t>(1, std::min(kMaxChunks, rows / kMinChunkRows)); }

// Rows [begin, end) of chunk c of n chunks.
inline void chunk_rows(int64_t rows, int64_t n, int64_t c, int64_t* begin, int64_t* end) {
  *begin = rows * c / n;
  *end = rows * (c + 1) / n;
}

// Sums per-chunk partials [chunks, cols] into out[cols] in chunk order.
void reduce_partials(const std::vector<float>& part, int64_t chunks, int64_t cols, float* out) {
#pragma omp parallel for if (chunks * cols > kParallelMin)
  for (int64_t c = 0; c < cols; c++) {
    double s = 0;
    for (int64_t k = 0; k < chunks; k++) s += part[size_t(k * cols + c)];
    out[c] = float(s);
  }
}

}  // namespace

// ---------------------------------------------------------------- LayerNorm

namespace {

// Row r of x, or of sum = x + residual (formed here) when there is a residual.
inline const float* norm_input(const float* px, const float* pres, float* psum, int64_t r, int64_t cols) {
  const float* xr = px + r * cols;
  if (!pres) return xr;
  const float* rr = pres + r * cols;
  float* sr = psum + r * cols;
#pragma omp simd
  for (int64_t j = 0; j < cols; j++) sr[j] = xr[j] + rr[j];
  return sr;
}

// gx row += gx_add row (after gx was stored: the same rounding as a separate add).
inline void add_row(float* gxr, const float* pga, int64_t r, int64_t cols) {
  if (!pga) return;
  const float* ga = pga + r * cols;
#pragma omp simd
  for (int64_t j = 0; j < cols; j++) gxr[j] += ga[j];
}

}  // namespace

void layernorm_fwd(const Tensor& x, const Tensor* w, const Tensor* b, Tensor& y, Tensor& mean, Tensor& rstd, float eps,
                   const Tensor* residual, Tensor* sum) {
  const int64_t rows = x.rows(), cols = x.cols();
  const float* px = x.f32();
  const float* pres = residual ? residual->f32() : nullptr;
  float* psum = residual ? sum->f32() : nullptr;
  const float* pw = w ? w->f32() : nullptr;
  const float* pb = b ? b->f32() : nullptr;
  float *py = y.f32(), *pm = mean.f32(), *pr = rstd.f32();
#pragma omp parallel for if (rows * cols > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = norm_input(px, pres, psum, r, cols);
    float* yr = py + r * cols;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) s += xr[j];
    const double mu = s / double(cols);
    double v = 0;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < cols; j++) {
      double d = double(xr[j]) - mu;
      v += d * d;
    }
    const float m = float(mu), rs = float(1.0 / std::sqrt(v / double(cols) + double(eps)));
    pm[r] = m;
    pr[r] = rs;
    if (pw && pb) {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - m) * rs * pw[j] + pb[j];
    } else if (pw) {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - m) * rs * pw[j];
    } else if (pb) {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - m) * rs + pb[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) yr[j] = (xr[j] - m) * rs;
    }
  }
}

// With x̂ = (x - mean)·rstd and g = gy·w (gy when there is no weight):
//   gx = rstd · (g - mean(g) - x̂ · mean(g·x̂)),   gw = Σ_rows gy·x̂,   gb = Σ_rows gy.
void layernorm_bwd(const Tensor& gy, const Tensor& x, const Tensor* w, const Tensor& mean, const Tensor& rstd,
                   Tensor* gx, Tensor* gw, Tensor* gb, const Tensor* gx_add) {
  const int64_t rows = x.rows(), cols = x.cols();
  const float* pga = gx && gx_add ? gx_add->f32() : nullptr;
  const float *pgy = gy.f32(), *px = x.f32(), *pm = mean.f32(), *pr = rstd.f32();
  const float* pw = w ? w->f32() : nullptr;
  float* pgx = gx ? gx->f32() : nullptr;
  const bool want_params = gw || gb;
  const int64_t chunks = want_params ? chunk_count(rows) : std::max<int64_t>(rows, 1);
  std::vector<float> part_w(gw ? size_t(chunks * cols) : 0, 0.f), part_b(gb ? size_t(chunks * cols) : 0, 0.f);

#pragma omp parallel if (rows * cols > kParallelMin)
  {
    std::vector<float> g(pgx && pw ? size_t(cols) : 0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
      int64_t r0, r1;
      chunk_rows(rows, chunks, c, &r0, &r1);
      float* acc_w = gw ? part_w.data() + c * cols : nullptr;
      float* acc_b = gb ? part_b.data() + c * cols : nullptr;
      for (int64_t r = r0; r < r1; r++) {
        const float *gyr = pgy + r * cols, *xr = px + r * cols;
        const float m = pm[r], rs = pr[r];
        if (acc_w) {
#pragma omp simd
          for (int64_t j = 0; j < cols; j++) acc_w[j] += gyr[j] * ((xr[j] - m) * rs);
        }
        if (acc_b) {
#pragma omp simd
          for (int64_t j = 0; j < cols; j++) acc_b[j] += gyr[j];
        }
        if (!pgx) continue;
        const float* gr = gyr;
        if (pw) {
#pragma omp simd
          for (int64_t j = 0; j < cols; j++) g[size_t(j)] = gyr[j] * pw[j];
          gr = g.data();
        }
        double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t j = 0; j < cols; j++) {
          sg += gr[j];
          sgx += double(gr[j]) * double((xr[j] - m) * rs);
        }
        const float mg = float(sg / double(cols)), mgx = float(sgx / double(cols));
        float* gxr = pgx + r * cols;
#pragma omp simd
        for (int64_t j = 0; j < cols; j++) gxr[j] = rs * (gr[j] - mg - ((xr[j] - m) * rs) * mgx);
        add_row(gxr, pga, r, cols);
      }
    }
  }
  if (gw) reduce_partials(part_w, chunks, cols, gw->f32());
  if (gb) reduce_partials(part_b, chunks, cols, gb->f32());
}

// ---------------------------------------------------------------- RMSNorm (HF LLaMA)

// y = w · (x · rstd), rstd = 1 / sqrt(mean(x²) + eps); the multiplication order is HF's.
void rmsnorm_fwd(const Tensor& x, const Tensor& w, Tensor& y, Tensor& rstd, float eps, const Tensor* residual,
                 Tensor* sum) {
  const int64_t rows = x.rows(), cols = x.cols();
  const float *px = x.f32(), *pw = w.f32();
  const float* pres = residual ? residual->f32() : nullptr;
  float* psum = residual ? sum->f32() : nullptr;
  float *py = y.f32(), *pr = rstd.f32();
#pragma omp parallel for if (rows * cols > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = norm_input(px, pres, psum, r, cols);
    float* yr = py + r * cols;
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < cols; j++) ss += double(xr[j]) * double(xr[j]);
    const float rs = float(1.0 / std::sqrt(ss / double(cols) + double(eps)));
    pr[r] = rs;
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) yr[j] = pw[j] * (xr[j] * rs);
  }
}

// gx = rstd · (gy·w - x · rstd² · mean(gy·w·x)),   gw = Σ_rows gy · x · rstd.
void rmsnorm_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& rstd, Tensor* gx, Tensor* gw,
                 const Tensor* gx_add) {
  const int64_t rows = x.rows(), cols = x.cols();
  const float* pga = gx && gx_add ? gx_add->f32() : nullptr;
  const float *pgy = gy.f32(), *px = x.f32(), *pw = w.f32(), *pr = rstd.f32();
  float* pgx = gx ? gx->f32() : nullptr;
  const int64_t chunks = gw ? chunk_count(rows) : std::max<int64_t>(rows, 1);
  std::vector<float> part_w(gw ? size_t(chunks * cols) : 0, 0.f);

#pragma omp parallel for schedule(static) if (rows * cols > kParallelMin)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t r0, r1;
    chunk_rows(rows, chunks, c, &r0, &r1);
    float* acc_w = gw ? part_w.data() + c * cols : nullptr;
    for (int64_t r = r0; r < r1; r++) {
      const float *gyr = pgy + r * cols, *xr = px + r * cols;
      const float rs = pr[r];
      if (acc_w) {
#pragma omp simd
        for (int64_t j = 0; j < cols; j++) acc_w[j] += gyr[j] * (xr[j] * rs);
      }
      if (!pgx) continue;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < cols; j++) s += double(gyr[j] * pw[j]) * double(xr[j]);
      const float k = float(s / double(cols)) * rs * rs;
      float* gxr = pgx + r * cols;
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) gxr[j] = rs * (gyr[j] * pw[j] - xr[j] * k);
      add_row(gxr, pga, r, cols);
    }
  }
  if (gw) reduce_partials(part_w, chunks, cols, gw->f32());
}

}  // namespace owlet::kern
