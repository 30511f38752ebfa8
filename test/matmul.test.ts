import test from 'ava';
import { cpu } from '../lib/native.ts';
import { backward, clearTape, linear, matmul, scale, scope, tapeSaved, tensor } from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { matmulRef } from './helpers/reference.ts';

// float64 reference: batched op(a)·op(b); b may be 2-D and shared.
const refMatmul = matmulRef;

for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
  test(`batched matmul transA=${ta} transB=${tb}`, (t) => {
    const B = 2, M = 3, K = 5, N = 4;
    checkOp(t, {
      inputs: [{ shape: ta ? [B, K, M] : [B, M, K] }, { shape: tb ? [B, N, K] : [B, K, N] }],
      forward: ([a, b]) => matmul(a, b, ta, tb),
      reference: ([a, b]) => refMatmul(a, b, B, M, K, N, ta, tb, false),
    });
  });
}

for (const tb of [false, true]) {
  test(`matmul with a shared 2-D right operand, transB=${tb}`, (t) => {
    const B = 3, M = 2, K = 5, N = 3;
    checkOp(t, {
      inputs: [{ shape: [B, M, K] }, { shape: tb ? [N, K] : [K, N] }],
      forward: ([a, b]) => matmul(a, b, false, tb),
      reference: ([a, b]) => refMatmul(a, b, B, M, K, N, false, tb, true),
    });
  });
}

test('linear with bias over a 3-D input', (t) => {
  const B = 2, T = 3, K = 7, N = 5;
  checkOp(t, {
    inputs: [{ shape: [B, T, K] }, { shape: [N, K] }, { shape: [N] }],
    forward: ([x, w, b]) => linear(x, w, b),
    reference: ([x, w, b]) => {
      const y = refMatmul(x, w, 1, B * T, K, N, false, true, true);
      for (let i = 0; i < y.length; i++) y[i] += b[i % N];
      return y;
    },
  });
});

test('linear with a frozen weight computes input gradients only', (t) => {
  checkOp(t, {
    inputs: [{ shape: [4, 6] }, { shape: [3, 6], grad: false }],
    forward: ([x, w]) => { const y = linear(x, w); t.is(w.grad, null); return y; },
    reference: ([x, w]) => refMatmul(x, w, 1, 4, 6, 3, false, true, true),
  });
});

test('linearForward refuses a bias that does not fit, naming the shapes', (t) => {
  const be = cpu();
  const x = be.fromBuffer('f32', [3, 4], new Float32Array(12)), w = be.fromBuffer('f32', [5, 4], new Float32Array(20));
  const b = be.fromBuffer('f32', [4], new Float32Array(4));
  t.throws(() => be.linearForward(x, w, b), { message: /bias f32\[4\].*do not fit/ });
  for (const h of [x, w, b]) h.dispose();
});

test('linearWeightGrad: gyᵀ x and the column sums of gy (or none), refusing operands that do not fit', (t) => {
  const be = cpu();
  const gy = be.fromBuffer('f32', [3, 2], Float32Array.from([1, 2, 3, 4, 5, 6]));
  const x = be.fromBuffer('f32', [3, 4], Float32Array.from({ length: 12 }, (_, i) => i - 5));
  const [gw, gb] = be.linearWeightGrad(gy, x, true);
  // gw[n][k] = Σ_r gy[r][n] x[r][k]
  const want = [0, 1].flatMap((n) => [0, 1, 2, 3].map((k) => [0, 1, 2].reduce((s, r) => s + [1, 2, 3, 4, 5, 6][r * 2 + n] * (r * 4 + k - 5), 0)));
  t.deepEqual(gw.shape, [2, 4]);
  t.deepEqual(Array.from(new Float32Array(gw.read())), want);
  t.deepEqual(Array.from(new Float32Array(gb!.read())), [9, 12]);
  const [gw2, none] = be.linearWeightGrad(gy, x, false);
  t.is(none, null);
  t.deepEqual(Array.from(new Float32Array(gw2.read())), want);
  const bad = be.fromBuffer('f32', [4, 4], new Float32Array(16));
  t.throws(() => be.linearWeightGrad(gy, bad, true), { message: /same rows/ });
  for (const h of [gy, x, gw, gb!, gw2, bad]) h.dispose();
});

// What the tape keeps for backward: a linear's input only when its weight trains (dW reads it), its weight only
// when its input needs a gradient (dx reads it) — stage 1 back-propagates through the frozen LLM, whose layer inputs
// would otherwise live until backward for nothing. The same for matmul's two operands.
test('linear and matmul keep for backward only the operands their gradients read', (t) => {
  scope(() => {
    const seen = () => tapeSaved().at(-1)!.saved.map((s) => s.handle.storageId);
    const x = tensor(new Float32Array(12), [4, 3], { requiresGrad: true }), xf = tensor(new Float32Array(12), [4, 3]);
    const w = tensor(new Float32Array(6), [2, 3], { requiresGrad: true }), wf = tensor(new Float32Array(6), [2, 3]);
    const id = (u: { handle: { storageId: number } }) => u.handle.storageId;
    linear(x, wf);
    t.deepEqual(seen(), [id(wf)], 'frozen weight: the input is not kept');
    linear(xf, w);
    t.deepEqual(seen(), [id(xf)], 'input without gradient: the weight is not kept');
    linear(x, w);
    t.deepEqual(seen(), [id(x), id(w)]);
    matmul(x, wf, false, true);
    t.deepEqual(seen(), [id(wf)]);
    matmul(xf, w, false, true);
    t.deepEqual(seen(), [id(xf)]);
    clearTape();
  });
});

test('a linear whose input alone needs a gradient back-propagates without its input kept', (t) => {
  scope(() => {
    const x = tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3], { requiresGrad: true });
    const wf = tensor(Float32Array.from([1, 0, -1, 2, 1, 0]), [2, 3]);
    const h = scale(x, 2);
    const y = linear(h, wf);
    h.dispose(); // only the tape could keep it now, and it does not need to
    backward(y, tensor(Float32Array.from([1, 1, 1, 1]), [2, 2]));
    t.deepEqual(Array.from(x.grad!.toFloat32()), [6, 2, -2, 6, 2, -2]);
  });
});
