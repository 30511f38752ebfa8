// Gradient clipping's rule, one function for the host (lib/train/grad-ops.ts's clipCoefficient computes the same in
// JS) and for the device's step control block (kern::step_control), so both give the same float64 bits.
#pragma once
#include "hd.h"

namespace owlet {

// The factor clipping multiplies the gradients by: max_norm / (norm + 1e-6) when that is below 1 (torch's
// clip_grad_norm_), else 1; also 1 without clipping (max_norm <= 0) or when the norm is not finite (the step is
// skipped then).
OWLET_HD double clip_coefficient(double norm, double max_norm) {
  const bool finite = norm - norm == 0.0;  // false for ±inf and NaN, on the host and the device alike
  if (!(max_norm > 0 && finite)) return 1.0;
  const double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? c : 1.0;
}

}  // namespace owlet
