// Counter-based random bits for dropout: a pure function of (seed, element index), so a backward pass (or another
// kernel, or the CUDA backend) regenerates exactly the mask the forward used without storing it, whatever the thread
// count or launch shape.
//
// The generator is SplitMix64 (Steele, Lea, Flood 2014) evaluated at a random-access position: the stream of `seed`
// starts at state key = mix64(seed) and element i reads mix64(key + (i + 1) * 0x9e3779b97f4a7c15). For one seed this
// is exactly the SplitMix64 sequence (it passes BigCrush); different seeds start at unrelated points of the 2^64-long
// Weyl sequence, so two masks overlap only by a chance of about numel / 2^64.
//
// Dropout keeps element i when the top 32 bits of the hash are >= threshold = floor(p * 2^32), so the keep
// probability is 1 - p to within 2^-32. Every function here is inline and compiles unchanged in C++ and CUDA.
#pragma once
#include <cstdint>

#include "hd.h"

namespace owlet::rng {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;  // 2^64 / golden ratio, odd: the Weyl increment

// SplitMix64's output function (Stafford's Mix13 variant).
OWLET_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The stream key of a seed; hoist it out of loops over elements.
OWLET_HD uint64_t stream_key(uint64_t seed) { return mix64(seed); }

// 64 random bits for element `index` of the stream `key`.
OWLET_HD uint64_t bits64(uint64_t key, uint64_t index) { return mix64(key + (index + 1) * kGolden); }

// floor(p * 2^32) for 0 <= p < 1 (p == 0 keeps everything).
OWLET_HD uint32_t drop_threshold(float p) {
  double t = double(p) * 4294967296.0;
  return t <= 0.0 ? 0u : t >= 4294967295.0 ? 4294967295u : uint32_t(t);
}

// True when dropout keeps element `index`.
OWLET_HD bool keep(uint64_t key, uint64_t index, uint32_t threshold) {
  return uint32_t(bits64(key, index) >> 32) >= threshold;
}

}  // namespace owlet::rng

