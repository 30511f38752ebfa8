// Activations (quick GELU, SiLU, SwiGLU), softmax over the last axis, and inverted dropout; forward and backward.
// Elementwise loops are `omp simd` with the vectorisable exp of vec_math.h, split across threads for big tensors, and
// compiled for AVX2 and AVX-512 too (vector_clones.h: the same bits; softmax's row reductions stay baseline).
#include <cmath>
#include <limits>

#include "../core/kernels.h"
#include "../core/rng_hash.h"
#include "vec_math.h"
#include "vector_clones.h"

namespace owlet::kern {

using vmath::sigmoid_f32;

namespace {
constexpr int64_t kParallelMin = 1 << 14;
constexpr float kQuickGelu = 1.702f;
}  // namespace

// ---------------------------------------------------------------- quick GELU: x·sigmoid(1.702x) (CLIP)

OWLET_VECTOR_CLONES void quick_gelu_fwd(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  const float* px = x.f32();
  float* py = y.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) py[i] = px[i] * sigmoid_f32(kQuickGelu * px[i]);
}

// d/dx x·s(kx) = s + k·x·s·(1 - s)
OWLET_VECTOR_CLONES void quick_gelu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx) {
  const int64_t n = x.numel();
  const float *pg = gy.f32(), *px = x.f32();
  float* pgx = gx.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float s = sigmoid_f32(kQuickGelu * px[i]);
    pgx[i] = pg[i] * (s + kQuickGelu * px[i] * s * (1.f - s));
  }
}

OWLET_VECTOR_CLONES void quick_gelu_bwd_fwd(const Tensor& gy, const Tensor& x, Tensor& gx, Tensor& y) {
  const int64_t n = x.numel();
  const float *pg = gy.f32(), *px = x.f32();
  float *pgx = gx.f32(), *py = y.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float s = sigmoid_f32(kQuickGelu * px[i]);
    pgx[i] = pg[i] * (s + kQuickGelu * px[i] * s * (1.f - s));
    py[i] = px[i] * s;  // quick_gelu_fwd's value (the same s)
  }
}

// ---------------------------------------------------------------- SiLU: x·sigmoid(x)

OWLET_VECTOR_CLONES void silu_fwd(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  const float* px = x.f32();
  float* py = y.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) py[i] = px[i] * sigmoid_f32(px[i]);
}

// d/dx x·s(x) = s·(1 + x·(1 - s))
OWLET_VECTOR_CLONES void silu_bwd(const Tensor& gy, const Tensor& x, Tensor& gx) {
  const int64_t n = x.numel();
  const float *pg = gy.f32(), *px = x.f32();
  float* pgx = gx.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float s = sigmoid_f32(px[i]);
    pgx[i] = pg[i] * (s * (1.f + px[i] * (1.f - s)));
  }
}

// ---------------------------------------------------------------- SwiGLU: silu(gate)·up (LLaMA MLP)

OWLET_VECTOR_CLONES void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& y) {
  const int64_t n = gate.numel();
  const float *pg = gate.f32(), *pu = up.f32();
  float* py = y.f32();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) py[i] = pg[i] * sigmoid_f32(pg[i]) * pu[i];
}

// ggate = gy·up·silu'(gate), gup = gy·silu(gate); either may be skipped (null).
OWLET_VECTOR_CLONES void swiglu_bwd(const Tensor& gy, const Tensor& gate, const Tensor& up, Tensor* ggate, Tensor* gup) {
  const int64_t n = gate.numel();
  const float *py = gy.f32(), *pg = gate.f32(), *pu = up.f32();
  float* pgg = ggate ? ggate->f32() : nullptr;
  float* pgu = gup ? gup->f32() : nullptr;
  if (pgg && pgu) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) {
      const float s = sigmoid_f32(pg[i]);
      pgg[i] = py[i] * pu[i] * (s * (1.f + pg[i] * (1.f - s)));
      pgu[i] = py[i] * (pg[i] * s);
    }
  } else if (pgg) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) {
      const float s = sigmoid_f32(pg[i]);
      pgg[i] = py[i] * pu[i] * (s * (1.f + pg[i] * (1.f - s)));
    }
  } else if (pgu) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) pgu[i] = py[i] * (pg[i] * sigmoid_f32(pg[i]));
  }
}

// ---------------------------------------------------------------- softmax over the last axis

// Max-subtracted, so large offsets cannot overflow. A row that is entirely -inf (fully masked) gives zeros rather
// than NaN.
void softmax_fwd(const Tensor& x, Tensor& y) {
  const int64_t rows = x.rows(), cols = x.cols();
  const float* px = x.f32();
  float* py = y.f32();
#pragma omp parallel for if (rows * cols > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = px + r * cols;
    float* yr = py + r * cols;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < cols; j++) m = xr[j] > m ? xr[j] : m;
    if (m == -std::numeric_limits<float>::infinity()) {
      for (int64_t j = 0; j < cols; j++) yr[j] = 0.f;
      continue;
    }
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) {
      const float e = vmath::exp_f32(xr[j] - m);
      yr[j] = e;
      s += e;
    }
    const float inv = 1.f / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
  }
}

// gx = y · (gy - Σ gy·y)
void softmax_bwd(const Tensor& gy, const Tensor& y, Tensor& gx) {
  const int64_t rows = y.rows(), cols = y.cols();
  const float *pg = gy.f32(), *py = y.f32();
  float* pgx = gx.f32();
#pragma omp parallel for if (rows * cols > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float *gr = pg + r * cols, *yr = py + r * cols;
    float* gxr = pgx + r * cols;
    double d = 0;
#pragma omp simd reduction(+ : d)
    for (int64_t j = 0; j < cols; j++) d += double(gr[j]) * double(yr[j]);
    const float df = float(d);
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) gxr[j] = yr[j] * (gr[j] - df);
  }
}

// ---------------------------------------------------------------- inverted dropout

// Element i is kept (and scaled by 1/(1-p)) when rng::keep(stream_key(seed), i, threshold(p)); the same call in the
// backward regenerates the mask (see rng_hash.h).
OWLET_VECTOR_CLONES static void dropout_apply(const float* src, float* dst, int64_t n, float p, uint64_t seed) {
  const uint64_t key = rng::stream_key(seed);
  const uint32_t threshold = rng::drop_threshold(p);
  const float scale = 1.f / (1.f - p);
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) dst[i] = rng::keep(key, uint64_t(i), threshold) ? src[i] * scale : 0.f;
}

void dropout_fwd(const Tensor& x, Tensor& y, float p, uint64_t seed) { dropout_apply(x.f32(), y.f32(), x.numel(), p, seed); }

void dropout_bwd(const Tensor& gy, Tensor& gx, float p, uint64_t seed) {
  dropout_apply(gy.f32(), gx.f32(), gy.numel(), p, seed);
}

}  // namespace owlet::kern
