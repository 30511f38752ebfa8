// Choosing the next token from a row of logits: greedy, or temperature + top-k + top-p sampling (HF order:
// temperature, then top-k, then top-p), with a seeded generator so runs repeat.
import { ArgumentError } from '../tensor/errors.ts';

export interface SamplingOptions {
  /** Greedy when true or when temperature is 0. */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
}

/** Throws an ArgumentError naming the first option that is not a valid value (NaN, a negative temperature, a
 *  fractional top-k or a top-p outside (0, 1] would otherwise sample from garbage or be ignored silently). */
export function checkSamplingOptions(o: SamplingOptions, op = 'sample'): void {
  const bad = (what: string, v: unknown, want: string) => {
    throw new ArgumentError(`${op}: ${what} must be ${want}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`, op);
  };
  if (o.greedy !== undefined && typeof o.greedy !== 'boolean') bad('greedy', o.greedy, 'true or false');
  const T = o.temperature;
  if (T !== undefined && !(typeof T === 'number' && Number.isFinite(T) && T >= 0)) bad('temperature', T, 'a finite number >= 0 (0: greedy)');
  const k = o.topK;
  if (k !== undefined && !(typeof k === 'number' && Number.isInteger(k) && k >= 0)) bad('topK', k, 'a whole number >= 0 (0: no limit)');
  const p = o.topP;
  if (p !== undefined && !(typeof p === 'number' && p > 0 && p <= 1)) bad('topP', p, 'in (0, 1] (1: no limit)');
}

export function sampleToken(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
  checkSamplingOptions(o);
  return pickToken(logits, o, rand);
}

/** sampleToken for options already checked (generateIds checks them once, not at every token). */
export function pickToken(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
  const V = logits.length;
  const T = o.temperature ?? 1;
  if (o.greedy || T <= 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = byLogitDescending(logits);
  if (o.topK && o.topK > 0 && o.topK < V) idx = idx.slice(0, o.topK);
  // (in the sorted order, summed left to right, as before: the same doubles, so the same token for the same draw)
  const max = logits[idx[0]];
  let probs = new Float64Array(idx.length);
  for (let r = 0; r < idx.length; r++) probs[r] = Math.exp((logits[idx[r]] - max) / T);
  normalise(probs);
  if (o.topP !== undefined && o.topP < 1) {
    let acc = 0, keep = 0;
    while (keep < probs.length) { acc += probs[keep]; keep++; if (acc >= o.topP) break; }
    idx = idx.slice(0, keep);
    probs = probs.slice(0, keep);
    normalise(probs);
  }
  let u = rand(), i = 0;
  for (; i < probs.length - 1; i++) { u -= probs[i]; if (u < 0) break; }
  return idx[i];
}

function normalise(p: Float64Array): void {
  let sum = 0;
  for (let r = 0; r < p.length; r++) sum += p[r];
  for (let r = 0; r < p.length; r++) p[r] /= sum;
}

/** Index bits of a sort key: vocabularies up to 2^21 tokens keep key = rank·2^21 + index below 2^53, exact. */
const INDEX_BITS = 21;

/**
 * The token ids ordered by logit, largest first, ties in id order: what a stable sort of the ids by `logits[b] -
 * logits[a]` gives, without its comparator. That sort took 43 ms for LLaMA's 32000 logits (2026-11-28, this project's
 * 2-core machine) — a sampled token cost more than a 7B decode step on a GPU. Here each id becomes one float64 key
 * (the logit's bits mapped to an unsigned integer that orders as the float does, flipped for descending order, times
 * 2^21, plus the id) and a typed-array sort orders the keys natively.
 */
export function byLogitDescending(logits: Float32Array): number[] {
  const V = logits.length;
  if (V > 2 ** INDEX_BITS) return Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
  const bits = new Uint32Array(logits.buffer, logits.byteOffset, V);
  const keys = new Float64Array(V);
  for (let i = 0; i < V; i++) {
    const b = bits[i] === 0x80000000 ? 0 : bits[i]; // (-0 is the logit 0: the comparator kept them in id order)
    // the float's order as an unsigned integer's, largest first: negative floats (sign bit set) after the positive
    // ones and in reverse order of their bits
    const descending = b & 0x80000000 ? b : (~b & 0x7fffffff) >>> 0;
    keys[i] = descending * 2 ** INDEX_BITS + i;
  }
  keys.sort();
  const idx = new Array<number>(V);
  for (let r = 0; r < V; r++) idx[r] = keys[r] % 2 ** INDEX_BITS;
  return idx;
}
