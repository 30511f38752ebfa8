import test from 'ava';
import { loraLinear, tensor, scope, backward, ArgumentError, ShapeError, liveTensors } from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { dropoutMask, hashU01 } from './helpers/hash_u01.ts';
import { randn, rng } from './helpers/rng.ts';

// float64 reference: y = x Wᵀ + s · ((x ⊙ mask / (1 - p)) Aᵀ) Bᵀ over x viewed as [M, K].
function refLora(x: Float64Array, w: Float64Array, a: Float64Array, b: Float64Array, M: number, K: number, N: number,
  r: number, s: number, keep?: Uint8Array, p = 0): Float64Array {
  const y = new Float64Array(M * N);
  const xa = new Float64Array(r);
  for (let i = 0; i < M; i++) {
    for (let q = 0; q < r; q++) {
      let acc = 0;
      for (let k = 0; k < K; k++) {
        const xv = keep ? (keep[i * K + k] ? x[i * K + k] / (1 - p) : 0) : x[i * K + k];
        acc += xv * a[q * K + k];
      }
      xa[q] = acc;
    }
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[i * K + k] * w[n * K + k];
      let lo = 0;
      for (let q = 0; q < r; q++) lo += xa[q] * b[n * r + q];
      y[i * N + n] = acc + s * lo;
    }
  }
  return y;
}

test('LoRA linear: forward and gradients of x, A and B against float64; W stays frozen', (t) => {
  const B = 2, T = 3, K = 7, N = 5, r = 3, s = 4;
  checkOp(t, {
    inputs: [{ shape: [B, T, K] }, { shape: [N, K], grad: false }, { shape: [r, K] }, { shape: [N, r] }],
    forward: ([x, w, a, b]) => {
      const y = loraLinear(x, w, a, b, s);
      t.deepEqual(y.shape, [B, T, N]);
      return y;
    },
    reference: ([x, w, a, b]) => refLora(x, w, a, b, B * T, K, N, r, s),
  });
});

test('LoRA linear with dropout: backward consistent with the TS port of the mask hash', (t) => {
  const M = 5, K = 9, N = 4, r = 2, s = 2, p = 0.3, seed = 12345;
  const keep = dropoutMask(seed, p, M * K);
  const kept = keep.reduce((acc, v) => acc + v, 0);
  t.true(kept > 0 && kept < M * K, 'the mask drops some elements and keeps others');
  checkOp(t, {
    inputs: [{ shape: [M, K] }, { shape: [N, K], grad: false }, { shape: [r, K] }, { shape: [N, r] }],
    forward: ([x, w, a, b]) => loraLinear(x, w, a, b, s, { dropoutP: p, seed }),
    reference: ([x, w, a, b]) => refLora(x, w, a, b, M, K, N, r, s, keep, p),
  });
});

// The CPU backend's row passes under dropout take ranks 4, 8 and 16 with the rank fixed at compile time and 16-wide
// blocks of the long rows (then a tail), any other rank at run time: each against float64, rows and columns not
// multiples of the blocks.
for (const r of [4, 8, 16, 5]) {
  test(`LoRA linear with dropout, rank ${r}, rows of 37 and 19: forward and gradients against float64`, (t) => {
    const M = 6, K = 37, N = 19, s = 2, p = 0.25, seed = 99 + r;
    const keep = dropoutMask(seed, p, M * K);
    checkOp(t, {
      inputs: [{ shape: [2, 3, K] }, { shape: [N, K], grad: false }, { shape: [r, K] }, { shape: [N, r] }],
      forward: ([x, w, a, b]) => loraLinear(x, w, a, b, s, { dropoutP: p, seed }),
      reference: ([x, w, a, b]) => refLora(x, w, a, b, M, K, N, r, s, keep, p),
    });
  });
}

test('LoRA dropout: same seed same output, another seed another output', (t) => {
  const M = 6, K = 11, N = 3, r = 2;
  const g = rng(9);
  scope(() => {
    const [x, w, a, b] = [[M, K], [N, K], [r, K], [N, r]].map((sh) => tensor(Float32Array.from(randn(g, sh[0] * sh[1])), sh));
    const y1 = loraLinear(x, w, a, b, 1, { dropoutP: 0.5, seed: 77 }).toArray();
    const y2 = loraLinear(x, w, a, b, 1, { dropoutP: 0.5, seed: 77 }).toArray();
    const y3 = loraLinear(x, w, a, b, 1, { dropoutP: 0.5, seed: 78 }).toArray();
    t.deepEqual(y1, y2);
    t.notDeepEqual(y1, y3);
  });
});

test('hash_u01 port: values in [0, 1), roughly uniform, seeds decorrelated', (t) => {
  let sum = 0, same = 0;
  const n = 2000;
  for (let i = 0; i < n; i++) {
    const u = hashU01(1, i);
    t.true(u >= 0 && u < 1);
    sum += u;
    if ((hashU01(2, i) < 0.5) === (u < 0.5)) same++;
  }
  t.true(Math.abs(sum / n - 0.5) < 0.03, `mean ${sum / n}`);
  t.true(Math.abs(same / n - 0.5) < 0.05, `seeds 1 and 2 agree on ${same} of ${n} coin flips`);
});

test('LoRA backward with x frozen computes only A and B gradients; W.grad stays null', (t) => {
  const live = liveTensors();
  scope(() => {
    const g = rng(4);
    const x = tensor(Float32Array.from(randn(g, 4 * 5)), [4, 5]);
    const w = tensor(Float32Array.from(randn(g, 3 * 5)), [3, 5]);
    const a = tensor(Float32Array.from(randn(g, 2 * 5)), [2, 5], { requiresGrad: true });
    const b = tensor(Float32Array.from(randn(g, 3 * 2)), [3, 2], { requiresGrad: true });
    backward(loraLinear(x, w, a, b, 4, { dropoutP: 0.1, seed: 3 }));
    t.is(x.grad, null);
    t.is(w.grad, null);
    t.deepEqual(a.grad?.shape, [2, 5]);
    t.deepEqual(b.grad?.shape, [3, 2]);
    a.grad!.dispose(); a.grad = null;
    b.grad!.dispose(); b.grad = null;
  });
  t.is(liveTensors(), live);
});

test('LoRA linear rejects a trainable base weight, a missing seed and inconsistent ranks', (t) => {
  scope(() => {
    const g = rng(1);
    const mk = (sh: number[], requiresGrad = false) => tensor(Float32Array.from(randn(g, sh[0] * sh[1])), sh, { requiresGrad });
    const x = mk([4, 5]), w = mk([3, 5]), a = mk([2, 5], true), b = mk([3, 2], true);
    t.throws(() => loraLinear(x, mk([3, 5], true), a, b, 1), { instanceOf: ArgumentError, message: /frozen/ });
    t.throws(() => loraLinear(x, w, a, b, 1, { dropoutP: 0.1 }), { instanceOf: ArgumentError, message: /seed/ });
    t.throws(() => loraLinear(x, w, a, b, 1, { dropoutP: 1, seed: 1 }), { instanceOf: ArgumentError, message: /dropoutP/ });
    t.throws(() => loraLinear(x, w, a, mk([3, 3]), 1), { instanceOf: ShapeError, message: /b must be \[N, r\]/ });
    t.throws(() => loraLinear(x, w, mk([2, 4]), b, 1), { instanceOf: ShapeError });
    t.throws(() => loraLinear(mk([4, 6]), w, a, b, 1), { instanceOf: ShapeError });
  });
});
