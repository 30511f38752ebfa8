// Counter-based uniform numbers for dropout masks: a pure function of (seed, element index), so a backward pass
// regenerates the forward's mask instead of storing it, and the CPU and CUDA backends draw identical masks.
//
// Definition (ports must match bit for bit; test/helpers/hash_u01.ts is the TS one):
//   mix(z)            = splitmix64's finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
//                       z *= 0x94D049BB133111EB; z ^= z >> 31   (all mod 2^64)
//   hash_u01(s, i)    = (mix(mix(s) + (i + 1) · 0x9E3779B97F4A7C15) >> 40) · 2^-24
// i.e. the (i+1)-th output of a splitmix64 generator whose state starts at mix(seed). Hashing the seed first keeps
// nearby seeds (1, 2, 3 …) from giving shifted copies of one stream. The top 24 bits make the float exact, so the
// result is in [0, 1) and `u >= p` keeps an element with probability 1 - p (up to 2^-24).
#pragma once
#include <cstdint>

#include "rng_hash.h"

#include "hd.h"

namespace owlet {

// The same counter-based stream as rng_hash.h (one generator for every dropout mask in owlet), read as a float.
OWLET_HD uint64_t hash_u01_key(uint64_t seed) { return rng::stream_key(seed); }

OWLET_HD float hash_u01_at(uint64_t key, uint64_t index) {
  return float(rng::bits64(key, index) >> 40) * (1.0f / 16777216.0f);
}

OWLET_HD float hash_u01(uint64_t seed, uint64_t index) { return hash_u01_at(hash_u01_key(seed), index); }

}  // namespace owlet

