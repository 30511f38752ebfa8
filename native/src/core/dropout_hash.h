// Counter-based dropout masks: whether element `index` of a dropout stream with a given seed survives is a pure
// function of (seed, index), so a backward pass regenerates the forward's mask instead of storing it, and the CPU and
// CUDA backends draw identical masks. The mixer is SplitMix64's finaliser (Steele, Lea & Flood 2014) applied to
// key + index·γ, which is exactly SplitMix64's output at position `index` of the stream keyed by the seed: cheap (two
// 64-bit multiplies), stateless, and statistically strong (BigCrush) for consecutive counters.
// The TypeScript port used by tests lives in test/helpers/dropout_hash.ts; keep the two identical.
#pragma once
#include <cstdint>

#include "rng_hash.h"

#include "hd.h"

namespace owlet::dropout {

// Attention's view of the one counter-based stream in rng_hash.h: 32 bits per (b, h, i, j) probability.
OWLET_HD uint64_t stream_key(uint64_t seed) { return rng::stream_key(seed); }

OWLET_HD uint32_t bits(uint64_t key, uint64_t index) { return uint32_t(rng::bits64(key, index) >> 32); }

OWLET_HD uint32_t threshold(float p) { return rng::drop_threshold(p); }

OWLET_HD bool keep(uint64_t key, uint64_t index, uint32_t thr) { return bits(key, index) >= thr; }

OWLET_HD uint64_t attention_index(int64_t b, int64_t h, int64_t i, int64_t j, int64_t H, int64_t Tq, int64_t Tk) {
  return uint64_t(((b * H + h) * Tq + i) * Tk + j);
}

}  // namespace owlet::dropout
