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
  let idx = Array.from({ length: V }, (_, i) => i);
  idx.sort((a, b) => logits[b] - logits[a]);
  if (o.topK && o.topK > 0 && o.topK < V) idx = idx.slice(0, o.topK);
  const max = logits[idx[0]];
  let probs = idx.map((i) => Math.exp((logits[i] - max) / T));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (o.topP !== undefined && o.topP < 1) {
    let acc = 0, keep = 0;
    while (keep < probs.length) { acc += probs[keep]; keep++; if (acc >= o.topP) break; }
    idx = idx.slice(0, keep);
    probs = probs.slice(0, keep);
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  let u = rand(), i = 0;
  for (; i < probs.length - 1; i++) { u -= probs[i]; if (u < 0) break; }
  return idx[i];
}
