// One rank of a process-group test, started by test/dist/process-group.test.ts with torchrun's variables set. Runs
// the scenario named in argv[2] and prints one JSON line: { ok: results } or { error: { name, code, op, message } }.
import { initProcessGroup } from '../../../lib/dist/index.ts';
import { add, backward, keep, linear, scope, tensor, zeros, type BackwardOptions, type Tensor } from '../../../lib/tensor/index.ts';

const scenario = process.argv[2];
const started = Date.now();
let opStart = 0; // when the collective under test began

function values(t: Tensor): number[] { return Array.from(t.toFloat32()); }

async function run(): Promise<unknown> {
  const g = initProcessGroup({ bucketBytes: Number(process.env.TEST_BUCKET_BYTES ?? 25 << 20) });
  const r = g.rank;
  switch (scenario) {
    case 'collectives': {
      // Sizes: 3 + 5 + 7 floats fit one 64-byte bucket, the 101-float tensor is larger than a bucket (goes alone).
      const xs = [tensor(new Float32Array([1, 2, 3].map((v) => v * (r + 1))), [3]),
        tensor(new Float32Array(5).fill(r + 0.5), [5]), tensor(new Float32Array(101).map((_, i) => i * (r + 1)), [101]),
        tensor(new Float32Array(7).fill(-r), [7])];
      g.allReduceSum(xs);
      const sums = xs.map(values);
      const m = [tensor(new Float32Array([r, 10 * r]), [2])];
      g.allReduceMean(m);
      const numbers = g.allReduceNumbers([r + 0.25, 1e-12 * (r + 1), 2 ** 40 + r]);
      const b = [tensor(new Float32Array([r + 7, r + 8]), [2]), tensor(new Int32Array([r * 100, -r]), [2], { dtype: 'i32' })];
      g.broadcast(b, 1);
      g.barrier();
      const gathered = g.gather(`from ${r}`);
      const shared = g.shareFromRoot(r === 0 ? 'hello from 0' : undefined);
      g.close();
      return { rank: r, world: g.worldSize, sums, mean: values(m[0]), numbers, bcast: [values(b[0]), Array.from(b[1].data<'i32'>())], gathered, shared };
    }
    case 'overlap': {
      // Gradients of a small chain, two micro-batches (data differ by rank and micro-batch), reduced after the
      // backward (allReduceMean) and overlapped with it (the gradient reducer); parameter 0 is unused on rank 1.
      const shapes = [[4, 6], [5, 6], [7, 5], [4, 7], [4]];
      const seq = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => ((i * 7 + k * 3) % 13) / 8 - 0.75);
      const params = () => shapes.map((s, k) => tensor(seq(s.reduce((a, b) => a * b, 1), k), s, { requiresGrad: true }));
      const step = (ps: Tensor[], hooks?: BackwardOptions) => {
        for (let micro = 0; micro < 2; micro++) {
          scope(() => {
            const x = tensor(seq(18, 10 + 2 * r + micro), [3, 6]);
            const h3 = linear(linear(linear(x, ps[1]), ps[2]), ps[3], ps[4]);
            const y = r === 0 ? add(h3, linear(x, ps[0])) : h3;
            backward(y, undefined, micro === 1 ? hooks : undefined);
          });
        }
      };
      const grads = (ps: Tensor[]) => ps.map((p) => values(p.grad!));
      const a = params();
      step(a);
      for (const p of a) if (!p.grad) p.grad = keep(zeros([...p.shape]));
      g.allReduceMean(a.map((p) => p.grad!));
      const b = params();
      const reducer = g.gradientReducer(b)!;
      step(b, reducer.backwardOptions());
      const early = reducer.startedEarly;
      const had = reducer.finish();
      return { rank: r, sequential: grads(a), overlapped: grads(b), had, early, buckets: reducer.buckets };
    }
    case 'late-collective': {
      // Rank 1 joins the all-reduce 2.5 s late; rank 0's 1 s operation timeout must fire first.
      if (r === 1) await new Promise((res) => setTimeout(res, 2500));
      opStart = Date.now();
      g.allReduceSum([tensor(new Float32Array([1]), [1])]);
      return { rank: r };
    }
    case 'peer-exits': {
      if (r === 1) process.exit(0);
      await new Promise((res) => setTimeout(res, 300));
      opStart = Date.now();
      g.allReduceNumbers([1]);
      return { rank: r };
    }
    default: throw new Error(`unknown scenario ${scenario}`);
  }
}

try {
  const ok = await run();
  process.stdout.write(JSON.stringify({ ok, ms: Date.now() - started }) + '\n');
} catch (e) {
  const x = e as { name?: string; code?: string; op?: string; message?: string };
  process.stdout.write(JSON.stringify({ error: { name: x.name, code: x.code, op: x.op, message: x.message }, ms: Date.now() - started,
    opMs: opStart ? Date.now() - opStart : null }) + '\n');
  process.exitCode = 3;
}
