// CPU attention throughput at the demo's shapes: forward, and forward + backward, in GFLOP/s.
// FLOPs (notes/performance.md): forward 4·B·H·Tq·Tk·D (half when causal); backward 2.5 × forward.
// Run: node --import=tsx bench/attention_cpu.ts [iterations]
import { attention, tensor, scope, backward, noGrad } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { randn, rng } from '../test/helpers/rng.ts';

interface Shape { name: string; B: number; H: number; Tq: number; Tk: number; D: number; causal: boolean }
const shapes: Shape[] = [
  { name: 'LLaMA-ish causal', B: 8, H: 4, Tq: 97, Tk: 97, D: 64, causal: true },
  { name: 'ViT full', B: 8, H: 3, Tq: 257, Tk: 257, D: 64, causal: false },
  { name: 'abstractor cross', B: 8, H: 3, Tq: 16, Tk: 273, D: 64, causal: false },
];
const iters = Number(process.argv[2] ?? 30);
const r = rng(1);
const rand = (shape: number[]) => tensor(Float32Array.from(randn(r, shape.reduce((a, b) => a * b))), shape, { requiresGrad: true });

// Median seconds per call after a warm-up: the median, because the machine's 2 cores are shared and single runs can
// stall for whole scheduler ticks.
function time(fn: () => void): number {
  for (let i = 0; i < 5; i++) fn();
  const ts: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return ts.sort((a, b) => a - b)[ts.length >> 1];
}

console.log(`owlet CPU attention, ${JSON.stringify(cpu().info())}, ${iters} iterations`);
for (const s of shapes) {
  scope(() => {
    const q = rand([s.B, s.Tq, s.H, s.D]), k = rand([s.B, s.Tk, s.H, s.D]), v = rand([s.B, s.Tk, s.H, s.D]);
    const g = rand([s.B, s.Tq, s.H, s.D]);
    const fwdFlops = (4 * s.B * s.H * s.Tq * s.Tk * s.D) / (s.causal ? 2 : 1);
    for (const p of [0, 0.1]) {
      const opts = { causal: s.causal, dropoutP: p, seed: 7 };
      const f = time(() => noGrad(() => attention(q, k, v, opts).dispose()));
      const fb = time(() => scope(() => {
        backward(attention(q, k, v, opts), g);
        for (const x of [q, k, v]) { x.grad?.dispose(); x.grad = null; }
      }));
      console.log(`${s.name.padEnd(17)} B${s.B} H${s.H} Tq${s.Tq} Tk${s.Tk} D${s.D}${s.causal ? ' causal' : ''} p=${p}: ` +
        `fwd ${(f * 1e3).toFixed(2)} ms ${(fwdFlops / f / 1e9).toFixed(1)} GFLOP/s, ` +
        `fwd+bwd ${(fb * 1e3).toFixed(2)} ms ${((3.5 * fwdFlops) / fb / 1e9).toFixed(1)} GFLOP/s`);
    }
  });
}
