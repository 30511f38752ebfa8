// TS port of native/src/core/hash_u01.h (dropout masks), bit for bit, in BigInt: tests rebuild a kernel's mask with it.
const M64 = (1n << 64n) - 1n;

function mix(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** Uniform in [0, 1): the (index+1)-th output of splitmix64 started at mix(seed). */
export function hashU01(seed: number | bigint, index: number): number {
  const key = mix(BigInt(seed) & M64);
  const z = mix((key + BigInt(index + 1) * 0x9e3779b97f4a7c15n) & M64);
  return Number(z >> 40n) / 16777216;
}

/** Keep mask of dropout with probability p over n elements (kept where hashU01 >= p), as the kernels draw it. */
export function dropoutMask(seed: number, p: number, n: number): Uint8Array {
  const key = mix(BigInt(seed) & M64);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const z = mix((key + BigInt(i + 1) * 0x9e3779b97f4a7c15n) & M64);
    out[i] = Number(z >> 40n) / 16777216 >= Math.fround(p) ? 1 : 0;
  }
  return out;
}
