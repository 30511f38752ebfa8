// Rotary position embedding, HF LLaMA "rotate half" convention, on x [B, T, H, D]:
//   y = x·cos + rotate_half(x)·sin,  rotate_half([a, b]) = [-b, a] over the two halves of D,
// with cos/sin of angle(pos, i) = pos · theta^(-2i/D) as HF's LlamaRotaryEmbedding computes it in fp32
// (core/rope_angle.h), i < D/2, and pos = pos0 + t. The backward is the inverse (transposed) rotation.
//
// cos/sin cost a float64 libm call each, far more than the rotation itself, so tables are cached per (D, theta) for
// positions [0, P) and grown on demand; an entry depends only on (pos, i, D, theta), so a grown table has the same
// values. Tables are immutable once published (shared_ptr), so a kernel reads one without holding the lock.
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <vector>

#include "../core/kernels.h"
#include "vector_clones.h"
#include "../core/rope_angle.h"

namespace owlet::kern {

namespace {

constexpr int64_t kParallelMin = 1 << 14;

constexpr int64_t kMaxCachedEntries = int64_t(1) << 22;  // positions·D/2 per table (32 MiB of cos+sin)

struct RopeTable {
  int64_t half = 0, first = 0, positions = 0;  // covers positions [first, first + positions)
  double theta = 0;
  std::vector<float> cos, sin;  // [positions, half]
};

// Fills rows [from, table.positions) of the table.
void fill_table(RopeTable& t, int64_t from) {
  t.cos.resize(size_t(t.positions * t.half));
  t.sin.resize(size_t(t.positions * t.half));
  std::vector<float> inv_freq(size_t(t.half));
  for (int64_t i = 0; i < t.half; i++) inv_freq[size_t(i)] = rope_inv_freq(t.theta, i, 2 * t.half);
  for (int64_t p = from; p < t.positions; p++)
    for (int64_t i = 0; i < t.half; i++) {
      const double angle = rope_angle(t.first + p, inv_freq[size_t(i)]);
      t.cos[size_t(p * t.half + i)] = float(std::cos(angle));
      t.sin[size_t(p * t.half + i)] = float(std::sin(angle));
    }
}

// A table covering positions [pos0, pos0 + count): the cached one for (D, theta), grown when needed, or a one-off
// table when the positions are too far out to cache.
std::shared_ptr<const RopeTable> rope_table(int64_t half, double theta, int64_t pos0, int64_t count) {
  const int64_t positions = pos0 + count;
  if (positions * half > kMaxCachedEntries) {
    auto t = std::make_shared<RopeTable>();
    t->half = half;
    t->theta = theta;
    t->first = pos0;
    t->positions = count;
    fill_table(*t, 0);
    return t;
  }
  static std::mutex mu;
  static std::vector<std::shared_ptr<const RopeTable>> cache;  // a handful of (D, theta) pairs
  std::lock_guard<std::mutex> lock(mu);
  size_t slot = cache.size();
  for (size_t i = 0; i < cache.size(); i++)
    if (cache[i]->half == half && cache[i]->theta == theta) slot = i;
  if (slot < cache.size() && cache[slot]->positions >= positions) return cache[slot];

  auto t = std::make_shared<RopeTable>();
  t->half = half;
  t->theta = theta;
  // Grow geometrically (token-by-token generation stays amortised O(1)), within the cache budget (positions·half
  // <= kMaxCachedEntries was checked above, so the cap never cuts below what is needed).
  const int64_t have = slot < cache.size() ? cache[slot]->positions : 0;
  t->positions = std::min(std::max({positions, 2 * have, int64_t(64)}), kMaxCachedEntries / half);
  if (have) {
    t->cos = cache[slot]->cos;
    t->sin = cache[slot]->sin;
  }
  fill_table(*t, have);
  if (slot < cache.size()) cache[slot] = t;
  else {
    if (cache.size() >= 8) cache.erase(cache.begin());
    cache.push_back(t);
  }
  return t;
}

// Rotates every D-row of src into dst by +angle (sign = +1, forward) or -angle (sign = -1, backward).
OWLET_VECTOR_CLONES void rotate(const Tensor& src, Tensor& dst, int64_t pos0, double theta, float sign) {
  const int64_t B = src.dim(0), T = src.dim(1), H = src.dim(2), D = src.dim(3), half = D / 2;
  if (src.numel() == 0) return;
  auto table = rope_table(half, theta, pos0, T);
  const float *ps = src.f32(), *tc = table->cos.data() + (pos0 - table->first) * half,
              *ts = table->sin.data() + (pos0 - table->first) * half;
  float* pd = dst.f32();
#pragma omp parallel for collapse(2) if (src.numel() > kParallelMin)
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const float* c = tc + t * half;
      const float* s = ts + t * half;
      for (int64_t h = 0; h < H; h++) {
        const int64_t off = ((b * T + t) * H + h) * D;
        const float* x = ps + off;
        float* y = pd + off;
#pragma omp simd
        for (int64_t i = 0; i < half; i++) {
          const float a = x[i], z = x[i + half], si = sign * s[i];
          y[i] = a * c[i] + (-z) * si;
          y[i + half] = z * c[i] + a * si;
        }
      }
    }
}

}  // namespace

void rope_fwd(const Tensor& x, Tensor& y, int64_t pos0, double theta) { rotate(x, y, pos0, theta, 1.f); }

void rope_bwd(const Tensor& gy, Tensor& gx, int64_t pos0, double theta) { rotate(gy, gx, pos0, theta, -1.f); }

}  // namespace owlet::kern
