// Float to integer conversions with a defined result everywhere: C++ leaves casting NaN or an out-of-range value to
// an integer type undefined (x86 happens to give INT_MIN). Casts to integer dtypes truncate toward zero, saturate at
// the type's limits and turn NaN into 0, on both backends alike.
#pragma once
#include <cstdint>

#include "hd.h"

namespace owlet {

template <class I>
OWLET_HD I saturate_to(double v, double lo, double hi) {
  if (!(v == v)) return I(0);  // NaN
  if (v <= lo) return I(lo);
  if (v >= hi) return I(hi);
  return I(v);
}
OWLET_HD int32_t to_i32(double v) { return saturate_to<int32_t>(v, -2147483648.0, 2147483647.0); }
// (2^63 itself is not an int64: the largest double below it is)
OWLET_HD int64_t to_i64(double v) {
  return v >= 0x1p63 ? INT64_MAX : saturate_to<int64_t>(v, -0x1p63, 0x1.fffffffffffffp62);
}
OWLET_HD uint8_t to_u8(double v) { return saturate_to<uint8_t>(v, 0.0, 255.0); }

}  // namespace owlet
