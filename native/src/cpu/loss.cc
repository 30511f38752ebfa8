// Mean cross-entropy with its gradient in the same pass over each row: max, then exp(x - max) written straight into
// dlogits while summing, then one scale of that row (still in cache). The logits are read twice per row and never
// again; there is no separate softmax tensor and no second pass over the whole logits. Backward is mul_scalar_inplace
// on that saved gradient (times the incoming gradient of the scalar loss).
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../core/kernels.h"
#include "vec_math.h"

namespace owlet::kern {

namespace {

// Row maximum, and whether the row holds a NaN (a max reduction skips NaN silently).
inline float row_max(const float* x, int64_t V, bool* has_nan) {
  float m = -std::numeric_limits<float>::infinity();
  int32_t nans = 0;
#pragma omp simd reduction(max : m) reduction(+ : nans)
  for (int64_t j = 0; j < V; j++) {
    m = x[j] > m ? x[j] : m;
    nans += int32_t((__builtin_bit_cast(int32_t, x[j]) & 0x7fffffff) > 0x7f800000);
  }
  *has_nan = nans != 0;
  return m;
}

// d[j] = exp(x[j] - m); returns the sum in double (f32 partial sums over blocks of 512, so rounding stays ~1e-7).
inline double row_exp(const float* x, float* d, int64_t V, float m) {
  double total = 0;
  for (int64_t j0 = 0; j0 < V; j0 += 512) {
    int64_t j1 = std::min(V, j0 + 512);
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = j0; j < j1; j++) {
      float e = vmath::exp_nonpos(x[j] - m);
      d[j] = e;
      s += e;
    }
    total += s;
  }
  return total;
}

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index, Tensor& loss, Tensor& dlogits) {
  const int64_t V = logits.cols(), rows = logits.rows();
  const int32_t* lab = labels.i32();
  const float* px = logits.f32();
  float* pd = dlogits.f32();

  // Labels first (cheap, and before anything is written): validate and count.
  int64_t count = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t l = lab[r];
    if (l == ignore_index) continue;
    if (l < 0 || l >= V)
      fail(ErrorKind::Argument, "label " + std::to_string(l) + " at row " + std::to_string(r) + " is outside [0, " +
                                    std::to_string(V) + ") and is not ignoreIndex " + std::to_string(ignore_index));
    count++;
  }
  if (count == 0) {  // nothing to average: 0, not 0/0 (the official code gives NaN here)
    std::memset(pd, 0, dlogits.nbytes());
    loss.f32()[0] = 0.f;
    return;
  }

  const double inv_count = 1.0 / double(count);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<double> row_loss(size_t(rows), 0.0);
#pragma omp parallel for schedule(static) if (rows * V > (1 << 15))
  for (int64_t r = 0; r < rows; r++) {
    const float* x = px + r * V;
    float* d = pd + r * V;
    int64_t l = lab[r];
    if (l == ignore_index) {
      std::memset(d, 0, size_t(V) * sizeof(float));
      continue;
    }
    bool has_nan;
    float m = row_max(x, V, &has_nan);
    if (has_nan || !std::isfinite(m)) {  // NaN or +inf logit, or all -inf: like torch, the result is NaN
      for (int64_t j = 0; j < V; j++) d[j] = nan;
      row_loss[size_t(r)] = nan;
      continue;
    }
    double sum = row_exp(x, d, V, m);  // >= 1: the max element contributes exp(0)
    float scale = float(inv_count / sum);
    double p_label = double(d[l]) / sum;
#pragma omp simd
    for (int64_t j = 0; j < V; j++) d[j] *= scale;
    d[l] = float((p_label - 1.0) * inv_count);  // in double: p close to 1 would cancel in f32
    row_loss[size_t(r)] = std::log(sum) - (double(x[l]) - double(m));
  }
  // Fixed-order sum: the same loss for any thread count.
  double total = 0;
  for (double v : row_loss) total += v;
  loss.f32()[0] = float(total * inv_count);
}

void mul_scalar_inplace(Tensor& x, const Tensor& s) {
  const float k = s.f32()[0];
  float* px = x.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; i++) px[i] *= k;
}

void argmax_rows(const Tensor& x, Tensor& out) {
  const int64_t V = x.cols(), rows = x.rows();
  const float* px = x.f32();
  int32_t* po = out.i32();
#pragma omp parallel for schedule(static) if (rows * V > (1 << 16))
  for (int64_t r = 0; r < rows; r++) {
    const float* row = px + r * V;
    float best = 0.f;
    int64_t bi = -1;
    for (int64_t j = 0; j < V; j++) {
      float v = row[j];
      if (v > best || (bi < 0 && !std::isnan(v))) {  // strict: the first maximum stays
        best = v;
        bi = j;
      }
    }
    po[r] = int32_t(bi < 0 ? 0 : bi);
  }
}

}  // namespace owlet::kern
