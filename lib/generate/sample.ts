// Choosing the next token from a row of logits: greedy, or temperature + top-k + top-p sampling (HF order:
// temperature, then top-k, then top-p), with a seeded generator so runs repeat.
export interface SamplingOptions {
  /** Greedy when true or when temperature is 0. */
  greedy?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
}

export function sampleToken(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
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
