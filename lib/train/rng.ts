// The trainer's random numbers: xoshiro128** over four 32-bit words, seeded through splitmix32. Its whole state is
// four integers, so a checkpoint stores it exactly and a resumed run draws the same dropout seeds.
export type RngState = [number, number, number, number];

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export class Rng {
  private s: RngState;

  constructor(seed: number | RngState) {
    if (Array.isArray(seed)) { this.s = [...seed] as RngState; return; }
    if (!Number.isInteger(seed)) throw new RangeError(`Rng: seed must be an integer, got ${seed}`);
    // Mix both 32-bit halves of a 53-bit seed.
    const mix = splitmix32((seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x27d4eb2d));
    this.s = [mix(), mix(), mix(), mix()];
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] = (s[2] ^ s[0]) >>> 0;
    s[3] = (s[3] ^ s[1]) >>> 0;
    s[1] = (s[1] ^ s[2]) >>> 0;
    s[0] = (s[0] ^ s[3]) >>> 0;
    s[2] = (s[2] ^ t) >>> 0;
    s[3] = rotl(s[3], 11);
    return result;
  }
  /** Uniform in [0, 1). */
  next(): number { return this.nextU32() / 4294967296; }
  /** A non-negative integer below 2^53 (kernel seeds). */
  nextSeed(): number { return (this.nextU32() & 0x1fffff) * 4294967296 + this.nextU32(); }

  state(): RngState { return [...this.s] as RngState; }
  restore(state: readonly number[]): void {
    if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff)) {
      throw new RangeError(`Rng.restore: want four 32-bit words, got ${JSON.stringify(state)}`);
    }
    this.s = [...state] as RngState;
  }
}
