// Gradient accumulation when one backward hands the same storage to several inputs (add passes its incoming gradient
// to both operands): a later contribution to one of them must not change the others. These graphs gave 11 and 45
// where 1 and 21 are right while accumulation summed in place into a shared storage.
import test from 'ava';
import { DisposedError, add, backward, bytesInUse, concat, linear, mul, scale, scope, tensor } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { randn, rng } from './helpers/rng.ts';

const ones = () => tensor(Float32Array.of(1, 1), [2]);

test('two leaves given one add gradient, one of them used again: each gets its own gradient', (t) => {
  scope(() => {
    const w1 = tensor(Float32Array.of(1, 2), [2], { requiresGrad: true });
    const w2 = tensor(Float32Array.of(3, 4), [2], { requiresGrad: true });
    const z = mul(w1, tensor(Float32Array.of(10, 10), [2])); // d/dw1 = 10
    const loss = add(add(w1, w2), z);                       // d/dw1 = 1 + 10, d/dw2 = 1
    backward(loss, ones());
    t.deepEqual(Array.from(w1.grad!.toFloat32()), [11, 11]);
    t.deepEqual(Array.from(w2.grad!.toFloat32()), [1, 1]);
  });
});

test('two intermediates given one add gradient, one of them used again', (t) => {
  scope(() => {
    const x = tensor(Float32Array.of(1, 2), [2], { requiresGrad: true });
    const a = scale(x, 2), b = scale(x, 3);
    const loss = add(add(a, b), mul(a, a)); // 2x + 3x + 4x² → 5 + 8x
    backward(loss, ones());
    t.deepEqual(Array.from(x.grad!.toFloat32()), [13, 21]);
  });
});

test('an operand added to itself, then used again', (t) => {
  scope(() => {
    const x = tensor(Float32Array.of(1, 2), [2], { requiresGrad: true });
    const loss = add(add(x, x), mul(x, x)); // 2x + x² → 2 + 2x
    backward(loss, ones());
    t.deepEqual(Array.from(x.grad!.toFloat32()), [4, 6]);
  });
});

test('storageShared: true while another handle uses the storage', (t) => {
  scope(() => {
    const x = tensor(Float32Array.of(1, 2, 3, 4), [4]);
    t.false(x.handle.storageShared);
    const v = x.share([2, 2]);
    t.true(x.handle.storageShared);
    t.true(v.handle.storageShared);
    v.dispose();
    t.false(x.handle.storageShared);
  });
});

// A share of the same shape (the tape's saved operands) joins the owners of the same native handle instead of making a
// native view: the storage is shared all the same, and lives until its last owner is disposed.
test('a same-shape share: one handle, storageShared on both, the storage freed with the last owner', (t) => {
  scope(() => {
    const before = bytesInUse();
    const x = tensor(Float32Array.of(1, 2, 3, 4), [2, 2]);
    const s = x.share([2, 2]);
    t.is(s.handle, x.handle);
    t.true(x.storageShared);
    t.true(s.storageShared);
    x.dispose();
    t.true(x.disposed);
    t.false(s.disposed);
    t.false(s.storageShared);
    t.deepEqual(Array.from(s.toFloat32()), [1, 2, 3, 4]);
    t.throws(() => x.share(), { instanceOf: DisposedError });
    s.dispose();
    t.is(bytesInUse(), before);
  });
});

// A tensor read by several linear layers (LLaMA's q/k/v projections read one norm output): the later linears' dx GEMMs
// add into the gradient received so far (beta = 1) instead of a separate sum pass — the same gradient as summing.
test('a tensor read by three linears: dx accumulated by the GEMMs, no separate sum; the gradient as summed', (t) => {
  const be = cpu();
  const calls = { axpy: 0, matmulInto: 0 };
  const orig = { axpy: be.axpy, matmulInto: be.matmulInto };
  be.axpy = (...a: Parameters<typeof be.axpy>) => { calls.axpy++; return orig.axpy.apply(be, a); };
  be.matmulInto = (...a: Parameters<typeof be.matmulInto>) => { calls.matmulInto++; return orig.matmulInto.apply(be, a); };
  try {
    scope(() => {
      const r = rng(3);
      const x = tensor(Float32Array.from(randn(r, 5 * 4)), [5, 4], { requiresGrad: true });
      const ws = [3, 6, 2].map((n) => tensor(Float32Array.from(randn(r, n * 4)), [n, 4], { requiresGrad: true }));
      const h = scale(x, 1.5);  // an intermediate: its gradient is accumulated in `grads`, not a leaf's .grad
      const ys = ws.map((w) => linear(h, w));
      const gys = ys.map((y) => tensor(Float32Array.from(randn(r, y.numel)), [...y.shape]));
      const loss = concat(ys.map((y, i) => mul(y, gys[i])), 1);
      backward(loss, tensor(new Float32Array(loss.numel).fill(1), [...loss.shape]));
      // d/dx = 1.5 · Σ_i gy_i W_i
      const want = new Float64Array(20);
      ws.forEach((w, i) => {
        const W = w.toFloat32(), G = gys[i].toFloat32(), n = w.shape[0];
        for (let m = 0; m < 5; m++) for (let k = 0; k < 4; k++) for (let j = 0; j < n; j++) want[m * 4 + k] += 1.5 * G[m * n + j] * W[j * 4 + k];
      });
      const got = x.grad!.toFloat32();
      t.true(got.every((v, i) => Math.abs(v - want[i]) < 1e-5 * (1 + Math.abs(want[i]))), `${Array.from(got)} vs ${Array.from(want)}`);
    });
    t.is(calls.axpy, 0, 'no separate sum pass');
    t.is(calls.matmulInto, 2, 'the second and third dx GEMMs accumulate');
  } finally {
    Object.assign(be, orig);
  }
});
