// All-reduce throughput of the gloo process group between local processes (loopback): 100 MB of f32 gradients as
// 400 tensors of 250k floats, bucketed (25 MiB, the default) vs one collective per tensor.
// Usage: node --import tsx bench/dist_allreduce.ts [ranks=2]   (starts its own ranks; prints rank 0's timings)
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { initProcessGroup } from '../lib/dist/index.ts';
import { zeros } from '../lib/tensor/index.ts';

if (process.env.RANK === undefined) {
  const world = Number(process.argv[2] ?? 2);
  const port = await new Promise<number>((res) => { const s = createServer().listen(0, () => { const p = (s.address() as { port: number }).port; s.close(() => res(p)); }); });
  for (let r = 0; r < world; r++) {
    spawn(process.execPath, ['--import', 'tsx', 'bench/dist_allreduce.ts'], {
      stdio: r === 0 ? 'inherit' : 'ignore',
      env: { ...process.env, RANK: String(r), WORLD_SIZE: String(world), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), OMP_NUM_THREADS: '1' },
    });
  }
} else {
  const xs = Array.from({ length: 400 }, () => zeros([250_000]));
  const g = initProcessGroup(); // 25 MiB buckets
  const time = (f: () => void, reps = 3) => {
    f(); // warm-up (connections, pages)
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) f();
    return (performance.now() - t0) / reps;
  };
  const bucketed = time(() => g.allReduceMean(xs));
  const perTensor = time(() => { for (const x of xs) g.allReduceMean([x]); });
  g.close();
  if (process.env.RANK === '0') {
    console.log(`${process.env.WORLD_SIZE} ranks, 100 MB in 400 tensors: bucketed ${bucketed.toFixed(0)} ms (${(100 / bucketed * 1000).toFixed(0)} MB/s), ` +
      `one collective per tensor ${perTensor.toFixed(0)} ms`);
  }
}
