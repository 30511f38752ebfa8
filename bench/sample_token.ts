// The host cost of one sampled token over LLaMA's 32000 logits: pickToken (the typed-array key sort) against the
// comparator sort it replaced, which gives the same order. Run: npx tsx bench/sample_token.ts
import { pickToken } from '../lib/generate/sample.ts';
import { seededRandom } from '../lib/model/init.ts';

const V = 32000, ROUNDS = 40;
const r = seededRandom(1);
const logits = Float32Array.from({ length: V }, () => r() * 20 - 10);
const comparatorOrder = (l: Float32Array) => Array.from({ length: l.length }, (_, i) => i).sort((a, b) => l[b] - l[a]);

function msPer(f: () => void): number {
  f(); // (warm-up: compiled before timing)
  const t0 = performance.now();
  for (let i = 0; i < ROUNDS; i++) f();
  return (performance.now() - t0) / ROUNDS;
}

const sampled = msPer(() => pickToken(logits, { temperature: 0.7, topP: 0.9 }, () => 0.5));
const greedy = msPer(() => pickToken(logits, { temperature: 0 }, () => 0.5));
const comparator = msPer(() => comparatorOrder(logits));
console.log(JSON.stringify({ vocab: V, rounds: ROUNDS, sampledTokenMs: +sampled.toFixed(2), greedyTokenMs: +greedy.toFixed(3),
  comparatorSortAloneMs: +comparator.toFixed(2) }));
