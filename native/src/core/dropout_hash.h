// Counter-based dropout masks: whether element `index` of a dropout stream with a given seed survives is a pure
// function of (seed, index), so a backward pass regenerates the forward's mask instead of storing it, and the CPU and
// CUDA backends draw identical masks. The mixer is SplitMix64's finaliser (Steele, Lea & Flood 2014) applied to
// key + index·γ, which is exactly SplitMix64's output at position `index` of the stream keyed by the seed: cheap (two
// 64-bit multiplies), stateless, and statistically strong (BigCrush) for consecutive counters.
// The TypeScript port used by tests lives in test/helpers/dropout_hash.ts; keep the two identical.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define OWLET_HD __host__ __device__ __forceinline__
#else
#define OWLET_HD inline
#endif

namespace owlet::dropout {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, odd

OWLET_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The stream key of a seed (mixed so that nearby seeds give unrelated streams).
OWLET_HD uint64_t stream_key(uint64_t seed) { return mix64(seed + kGamma); }

// 32 uniform bits for element `index` of the stream.
OWLET_HD uint32_t bits(uint64_t key, uint64_t index) { return uint32_t(mix64(key + index * kGamma) >> 32); }

// An element is kept when bits >= threshold(p): P(keep) = 1 - floor(p·2^32)/2^32. p in [0, 1); p = 0 keeps all.
OWLET_HD uint32_t threshold(float p) {
  double t = double(p) * 4294967296.0;
  return t <= 0 ? 0u : (t >= 4294967295.0 ? 0xFFFFFFFFu : uint32_t(t));
}

OWLET_HD bool keep(uint64_t key, uint64_t index, uint32_t thr) { return bits(key, index) >= thr; }

// Attention's probabilities P[b, h, i, j] are numbered as a dense [B, H, Tq, Tk] tensor.
OWLET_HD uint64_t attention_index(int64_t b, int64_t h, int64_t i, int64_t j, int64_t H, int64_t Tq, int64_t Tk) {
  return uint64_t(((b * H + h) * Tq + i) * Tk + j);
}

}  // namespace owlet::dropout
