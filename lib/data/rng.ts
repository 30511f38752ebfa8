// Seeded randomness for the data pipeline. Streams are derived from (seed, …keys) by hashing, not advanced
// statefully, so a sample's shuffle position and augmentation depend only on the seed, the epoch and the sample:
// the same under any prefetch depth or worker count, and a resumed run needs no RNG state beyond the seed.

/** 32-bit mix of a list of integers (murmur3-style finaliser over each word). */
export function hashInts(...xs: number[]): number {
  let h = 0x9e3779b9 ^ xs.length;
  for (const x of xs) {
    // Split doubles beyond 32 bits into two words so large ids still mix fully.
    const lo = x >>> 0, hi = Math.floor(x / 4294967296) >>> 0;
    for (const w of [lo, hi]) {
      let k = Math.imul(w, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, 0x1b873593);
      h ^= k;
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
  }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A generator of uniform floats in [0, 1) (mulberry32) seeded from hashInts(keys). */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform in [a, b). */
  uniform(a: number, b: number): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
}

export function rng(...keys: number[]): Rng {
  let a = hashInts(...keys);
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, uniform: (lo, hi) => lo + (hi - lo) * next(), int: (n) => Math.floor(next() * n) };
}

/** A seeded permutation of 0..n-1 (Fisher–Yates). */
export function permutation(n: number, r: Rng): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = r.int(i + 1);
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}
