// TypeScript port of native/src/core/rng_hash.h as attention reads it (dropout_hash.h) (the counter-based dropout masks), so tests can build float64
// references that drop exactly the elements the kernels drop. Keep the two identical.
const M64 = (1n << 64n) - 1n;
const GAMMA = 0x9e3779b97f4a7c15n;

function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

export const streamKey = (seed: number): bigint => mix64(BigInt(seed) & M64);

/** 32 uniform bits for element `index` of the stream keyed by `key`. */
export const bits = (key: bigint, index: number): number => Number(mix64((key + BigInt(index + 1) * GAMMA) & M64) >> 32n);

/** Kept when bits >= threshold(p); p is rounded to fp32 as the kernels receive it. */
export function threshold(p: number): number {
  const t = Math.fround(p) * 4294967296;
  return t <= 0 ? 0 : t >= 4294967295 ? 4294967295 : Math.floor(t);
}

/** Inverted-dropout factors (1/(1-p) kept, 0 dropped) for elements 0..n-1 of the stream. */
export function dropoutFactors(seed: number, p: number, n: number): Float64Array {
  const key = streamKey(seed), thr = threshold(p), inv = 1 / (1 - Math.fround(p));
  const f = new Float64Array(n);
  for (let i = 0; i < n; i++) f[i] = bits(key, i) >= thr ? inv : 0;
  return f;
}
