// CPU runtime benchmark: GEMM GFLOP/s through owlet (JS → N-API → OpenBLAS) against OpenBLAS called directly from C,
// and the per-call overhead of a trivial native op from JS. Run: npx tsx bench/cpu_runtime.ts [--record]
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { cpu } from '../lib/native.ts';
import { tensor, scope } from '../lib/tensor/index.ts';

const b = cpu();
const sizes: [number, number, number][] = [[1024, 1024, 1024], [776, 256, 688], [776, 688, 256], [2048, 2048, 2048]];
const results: Record<string, unknown> = { date: new Date().toISOString(), cpu: cpus()[0]?.model, threads: b.info().threads };

const gemm: unknown[] = [];
for (const [M, K, N] of sizes) {
  scope(() => {
    const x = tensor(Float32Array.from({ length: M * K }, (_, i) => (i % 7) / 7), [M, K]);
    const w = tensor(Float32Array.from({ length: N * K }, (_, i) => (i % 5) / 5), [N, K]);
    b.matmul(x.handle, w.handle, false, true).dispose();
    let best = Infinity;
    for (let r = 0; r < (M === 2048 ? 3 : 10); r++) {
      const t = process.hrtime.bigint();
      b.matmul(x.handle, w.handle, false, true).dispose();
      best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
    }
    gemm.push({ M, K, N, gflops: +(2 * M * N * K / best / 1e9).toFixed(1) });
  });
}
results.owlet_gemm = gemm;

execFileSync('gcc', ['-O2', '-o', '/tmp/openblas_direct', 'bench/openblas_direct.c', '-I/usr/include/x86_64-linux-gnu/openblas-pthread',
  '-I/usr/include/openblas', '-lopenblas']);
results.openblas_direct = execFileSync('/tmp/openblas_direct', { env: { ...process.env, OPENBLAS_NUM_THREADS: String(b.info().threads) } }).toString().trim().split('\n').map((l) => JSON.parse(l));

// Per-call overhead: a trivial native op (scale of a 1-element tensor) called from JS, handle disposed each time.
scope(() => {
  const one = tensor([1]);
  const n = 200000;
  for (let i = 0; i < 10000; i++) b.scale(one.handle, 2).dispose();
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) b.scale(one.handle, 2).dispose();
  results.trivial_op_us = +(Number(process.hrtime.bigint() - t) / 1e3 / n).toFixed(3);
  const t2 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) b.fill(one.handle, 1);
  results.trivial_inplace_op_us = +(Number(process.hrtime.bigint() - t2) / 1e3 / n).toFixed(3);
});

console.log(JSON.stringify(results, null, 1));
if (process.argv.includes('--record')) {
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(`bench/results/cpu_runtime_${results.date!.toString().slice(0, 10)}.json`, JSON.stringify(results, null, 1) + '\n');
}
