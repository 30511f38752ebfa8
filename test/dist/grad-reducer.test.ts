// The gradient reducer in one process, against a stand-in for the other ranks: bucket layout (reverse registration
// order, a small first bucket, a large parameter alone), buckets started strictly in order as their gradients become
// final during the backward, the rest at finish(), the mean over ranks, zeros for a parameter this rank did not use.
import test from 'ava';
import { DistributedError } from '../../lib/tensor/errors.ts';
import { FIRST_BUCKET_BYTES, GradientReducer, planBuckets, type BucketComm } from '../../lib/dist/grad-reducer.ts';
import { backward, linear, scope, tensor, zeros, type Tensor } from '../../lib/tensor/index.ts';

const seq = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => ((i * 5 + k) % 9) / 6 - 0.6);
const param = (shape: number[], k: number, name: string) => tensor(seq(shape.reduce((a, b) => a * b, 1), k), shape, { requiresGrad: true, name });
const sized = (floats: number) => ({ numel: floats }) as Tensor;

test('buckets: reverse registration order, a first bucket of at most 1 MB, a parameter larger than a bucket alone', (t) => {
  const ps = [10, 300_000, 5, 5, 2000].map(sized); // bytes: 40, 1.2 MB, 20, 20, 8000
  t.deepEqual(planBuckets(ps, 25 << 20), [[4, 3, 2], [1, 0]], `the first bucket closes at ${FIRST_BUCKET_BYTES} bytes`);
  t.deepEqual(planBuckets(ps, 100), [[4], [3, 2], [1], [0]]);
  t.deepEqual(planBuckets([], 100), []);
});

/** The other rank had `peer` × this rank's gradients; logs what happens. */
function stand(worldSize: number, log: string[], peer = 1): BucketComm {
  return {
    worldSize,
    startAllReduceSum(xs: Tensor[]) {
      log.push(`start ${xs.map((x) => x.name ?? '?').join('+')}`);
      for (const x of xs) {
        const v = x.toFloat32().map((u) => u * (1 + peer));
        const y = tensor(v, [...x.shape]);
        x.backend.copyInto(x.handle, y.handle);
        y.dispose();
      }
      return { wait: () => log.push('wait') };
    },
  };
}

test('buckets start in bucket order once all their gradients are final, the rest at finish; the result is the mean', (t) => {
  // Registered a, b, c, u; the forward uses c first, then b, then a: c (bucket 0) is final last. u is unused.
  const [a, b, c, u] = [param([3, 4], 1, 'a'), param([4, 5], 2, 'b'), param([5, 6], 3, 'c'), param([2, 2], 4, 'u')];
  const names = new Map([[a, 'a'], [b, 'b'], [c, 'c'], [u, 'u']]);
  const log: string[] = [];
  // Gradients name themselves after their parameter, for the log.
  const comm = stand(2, log);
  const reducer = new GradientReducer([a, b, c, u], { worldSize: 2, startAllReduceSum: (xs) => comm.startAllReduceSum(xs.map((x) => {
    const p = [a, b, c, u].find((q) => q.grad === x)!;
    x.name = names.get(p);
    return x;
  })) }, 100);
  t.deepEqual(reducer.buckets, [[3], [2], [1], [0]]);
  const reference = [param([3, 4], 1, 'a'), param([4, 5], 2, 'b'), param([5, 6], 3, 'c')];
  const forward = (ps: Tensor[]) => linear(linear(linear(tensor(seq(12, 9), [2, 6]), ps[2]), ps[1]), ps[0]);
  scope(() => backward(forward(reference)));
  scope(() => {
    const opts = reducer.backwardOptions();
    backward(forward([a, b, c]), undefined, { onGradReady: (leaf) => { log.push(`ready ${names.get(leaf)}`); opts.onGradReady!(leaf); } });
  });
  log.push('backward done');
  t.deepEqual(log, ['ready a', 'ready b', 'ready c', 'backward done'], 'bucket 0 holds u, never final: nothing starts before it');
  log.length = 0;
  const had = reducer.finish();
  t.deepEqual(log, ['start u', 'start c', 'start b', 'start a', 'wait', 'wait', 'wait', 'wait']);
  t.deepEqual(had, [true, true, true, false]);
  reference.forEach((r, i) => t.deepEqual(Array.from([a, b, c][i].grad!.toFloat32()), Array.from(r.grad!.toFloat32()),
    'the peer had the same gradients: the mean is this rank\'s, bit for bit'));
  t.deepEqual(Array.from(u.grad!.toFloat32()), [0, 0, 0, 0], 'u was reduced as zeros');
  for (const p of [a, b, c, u, ...reference]) p.dispose();
});

test('a bucket starts during the backward as soon as it and every bucket before it are final', (t) => {
  const [a, b, c] = [param([3, 4], 1, 'a'), param([5, 3], 2, 'b'), param([6, 5], 3, 'c')];
  const log: string[] = [];
  const reducer = new GradientReducer([a, b, c], { worldSize: 2, startAllReduceSum: (xs) => {
    log.push(`start ${xs.length}`);
    return { wait: () => log.push('wait') };
  } }, 100);
  scope(() => {
    const opts = reducer.backwardOptions();
    // c is used last in the forward: final first, and its bucket comes first.
    backward(linear(linear(linear(tensor(seq(8, 9), [2, 4]), a, null), b, null), c, null), undefined,
      { onGradReady: (leaf) => { log.push(`ready ${leaf.name}`); opts.onGradReady!(leaf); } });
  });
  t.deepEqual(reducer.buckets, [[2], [1], [0]]);
  t.deepEqual(log, ['ready c', 'start 1', 'ready b', 'start 1', 'ready a', 'start 1']);
  t.is(reducer.startedEarly, 3);
  reducer.finish();
  t.deepEqual(log.slice(6), ['wait', 'wait', 'wait']);
  for (const p of [a, b, c]) p.dispose();
});

test('with no backward hooks (the last micro-batch was skipped) finish() reduces every bucket; bad gradients are refused', (t) => {
  const [a, b] = [param([2, 3], 1, 'a'), param([3], 2, 'b')];
  const log: string[] = [];
  const reducer = new GradientReducer([a, b], stand(3, log, 2), 1 << 20);
  a.grad = tensor(new Float32Array([3, 6, 9, 12, 15, 18]), [2, 3]);
  t.deepEqual(reducer.finish(), [true, false]);
  t.deepEqual(Array.from(a.grad.toFloat32()), [3, 6, 9, 12, 15, 18], '(x + 2x) / 3');
  t.deepEqual(Array.from(b.grad!.toFloat32()), [0, 0, 0]);
  t.is(log.filter((l) => l.startsWith('start')).length, 1, 'one bucket');
  b.grad!.dispose();
  b.grad = zeros([3], { dtype: 'bf16' });
  t.throws(() => reducer.finish(), { instanceOf: DistributedError, message: /all-reduced in f32; b has a bf16 gradient/ });
  t.throws(() => new GradientReducer([a], stand(2, log), 0), { instanceOf: DistributedError });
  for (const p of [a, b]) p.dispose();
});
