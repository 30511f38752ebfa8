// exp and sigmoid written so that GCC vectorises them inside `#pragma omp simd` loops: std::exp is a scalar libm call
// without -ffast-math (SiLU over 1.4M floats on one core: 3.0 ms with std::exp, 1.5 ms with exp_f32). The clamps
// are selects, which GCC if-converts only with -fno-trapping-math (set in CMakeLists.txt).
//
// exp_f32 is Cephes' expf: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two so n·ln2 is exact), a degree-7
// polynomial for e^r, and 2^n built in the exponent bits. Relative error < 1 ulp (8.3e-8 measured against double
// exp over every 97th float of the normal range). Inputs below -87.33 give 0 (true values there are < 2^-126);
// inputs above 88.37 saturate at ~2.4e38 instead of growing to inf — harmless for sigmoid and max-subtracted
// softmax, the only users. NaN in, NaN out.
#pragma once
#include <cstdint>
#include <cstring>

namespace owlet::vmath {

inline float exp_f32(float x) {
  const float kHi = 88.3762626647949f, kLo = -87.3365478515625f;
  float xc = x > kHi ? kHi : x;
  xc = xc < kLo ? kLo : xc;
  // n = round(x / ln2) with the 1.5·2^23 trick: t's low mantissa bits then hold n + 2^22 (no libm call, no
  // float->int conversion; vectorises).
  const float kMagic = 12582912.0f;
  float t = xc * 1.44269504088896341f + kMagic;
  float n = t - kMagic;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  uint32_t tb, mb;
  std::memcpy(&tb, &t, sizeof tb);
  std::memcpy(&mb, &kMagic, sizeof mb);
  uint32_t bits = (tb - mb + 127u) << 23;  // 2^n in the exponent field
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float y = p * scale;
  return x < kLo ? 0.0f : y;  // NaN compares false: NaN propagates through p
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

}  // namespace owlet::vmath
