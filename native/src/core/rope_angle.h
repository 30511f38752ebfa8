// RoPE's angles as the official code computes them: HF transformers' LlamaRotaryEmbedding (4.28, which mPLUG-Owl
// pins) in fp32 —
//   inv_freq = 1.0 / (base ** (torch.arange(0, D, 2).float() / D));   freqs = t.float() * inv_freq
// — then cos/sin of those fp32 angles. owlet computed the angles in float64 (as the plain PyTorch reference in
// shared/reference does); the fp32 product's rounding grows with the position, and at 2k tokens it moved the logits
// by 8e-5 relative (the parity audit of session 10). Here each step is the fp32 operation HF does: the exponent and
// the reciprocal are fp32 divisions, the power is rounded to fp32 (correctly rounded; torch's powf is within an
// ulp), the angle is one fp32 product; cos/sin are taken in float64 of that angle and rounded once (torch's fp32
// cos/sin are within an ulp of that). Shared by the CPU and CUDA backends (test/helpers/reference.ts is the TS one).
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"

namespace owlet {

OWLET_HD float rope_inv_freq(double theta, int64_t i, int64_t D) {
  const float e = float(2 * i) / float(D);
  return 1.0f / float(pow(double(float(theta)), double(e)));
}

OWLET_HD float rope_angle(int64_t pos, float inv_freq) { return float(pos) * inv_freq; }

}  // namespace owlet
