// LoRA linear on the CPU backend against the frozen linear it adapts, at the demo's stage-2 shapes (16 × 81 tokens:
// M = 1296 rows; K, N of 128 or 352; rank 8), with and without the demo's input dropout (0.05). Each time is the best
// of 7 rounds; run single-threaded for comparisons (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: this 2-core VM's
// second core makes two-thread timings of one op swing by 2×), and another build through OWLET_NATIVE_CPU=<.node>.
// Run: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 npx tsx bench/lora_cpu.ts [M,K,N;…]
import { cpu } from '../lib/native.ts';
import { rng, randn } from '../test/helpers/rng.ts';

const be = cpu();
const g = rng(5);
const rand = (shape: number[]) => be.fromBuffer('f32', shape, Float32Array.from(randn(g, shape.reduce((a, c) => a * c, 1), 0.5)));

function bestUs(f: () => void, reps = 50): number {
  for (let i = 0; i < 5; i++) f();
  let best = Infinity;
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) f();
    best = Math.min(best, (performance.now() - t0) / reps);
  }
  return best * 1e3;
}

const shapes = (process.argv[2] ?? '1296,128,128;1296,128,352;1296,352,128').split(';').map((s) => s.split(',').map(Number));
const rank = 8;
console.log(`LoRA r${rank} on the CPU backend, µs (best of 7): frozen forward and dx, then LoRA forward and backward (dx, dA, dB) and ` +
  'their sum over the frozen pair\'s');
for (const [M, K, N] of shapes) {
  const x = rand([M, K]), w = rand([N, K]), a = rand([rank, K]), b = rand([N, rank]), gy = rand([M, N]);
  const fwd = bestUs(() => be.matmul(x, w, false, true, 1).dispose());
  const dx = bestUs(() => be.matmul(gy, w, false, false, 1).dispose());
  for (const p of [0, 0.05]) {
    const lf = bestUs(() => { for (const t of be.loraForward(x, w, a, b, 4, p, 7)) t.dispose(); });
    const [y, xa] = be.loraForward(x, w, a, b, 4, p, 7);
    y.dispose();
    const lb = bestUs(() => { for (const t of be.loraBackward(gy, x, w, a, b, xa, 4, p, 7, true)) t?.dispose(); });
    xa.dispose();
    console.log(`M ${M} K ${K} N ${N} dropout ${p}: frozen ${fwd.toFixed(0)} + ${dx.toFixed(0)}, LoRA ${lf.toFixed(0)} + ` +
      `${lb.toFixed(0)}: ${((lf + lb) / (fwd + dx)).toFixed(2)}×`);
  }
  for (const t of [x, w, a, b, gy]) t.dispose();
}
