// What the host-emulator tests share: conversions between the kernels' storage types and float/double, and the
// relative max error they compare with (NaN anywhere counts as infinite; `floor` keeps near-zero references from
// dividing by almost nothing).
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace emu_values {

template <class T> T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <class T> float to_float(T v);
template <> inline float to_float<float>(float v) { return v; }
template <> inline float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> double to_double(T v) { return to_float(v); }

// n bf16 values of a standard normal distribution.
inline std::vector<__nv_bfloat16> random_bf16(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<__nv_bfloat16> v(n);
  for (auto& e : v) e = __float2bfloat16_rn(nd(rng));
  return v;
}

inline double rel_err(const std::vector<double>& got, const std::vector<double>& want, double floor = 1e-6) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < want.size(); i++) {
    double d = std::fabs(got[i] - want[i]);
    if (!(d <= diff)) diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    mag = std::max(mag, std::fabs(want[i]));
  }
  return diff / std::max(mag, floor);
}

}  // namespace emu_values
