// The residual add fused with the following norm (addLayerNorm, addRmsNorm): float64 gradient checks through both
// outputs (the residual stream s and the normalised y), and the same bits as add() then layerNorm()/rmsNorm() in the
// forward and in every gradient.
import test from 'ava';
import {
  add, addLayerNorm, addRmsNorm, backward, layerNorm, mul, rmsNorm, scale, scope, tensor, ShapeError, DTypeError, type Tensor,
} from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { randn, rng } from './helpers/rng.ts';

function refNorm(s: Float64Array, cols: number, eps: number, kind: 'ln' | 'rms', w?: Float64Array, b?: Float64Array): Float64Array {
  const y = new Float64Array(s.length);
  for (let r = 0; r < s.length / cols; r++) {
    const row = s.subarray(r * cols, (r + 1) * cols);
    const m = kind === 'ln' ? row.reduce((a, v) => a + v, 0) / cols : 0;
    const rs = 1 / Math.sqrt(row.reduce((a, v) => a + (v - m) ** 2, 0) / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = (row[j] - m) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
  }
  return y;
}
const plus = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);

// 0.7·s + y·c: both outputs carry gradient (c varies per element so the norm's gradient is not trivial).
for (const kind of ['ln', 'rms'] as const) {
  test(`${kind === 'ln' ? 'addLayerNorm' : 'addRmsNorm'}: 0.7·s + c·norm(s), s = x + r, against float64`, (t) => {
    const R = 6, C = 11;
    const c = Float64Array.from(randn(rng(4), R * C));
    checkOp(t, {
      inputs: kind === 'ln' ? [{ shape: [2, 3, C] }, { shape: [2, 3, C] }, { shape: [C] }, { shape: [C] }]
        : [{ shape: [2, 3, C] }, { shape: [2, 3, C] }, { shape: [C] }],
      forward: ([x, r, w, b]) => {
        const { sum, y } = kind === 'ln' ? addLayerNorm(x, r, w, b, 1e-5) : addRmsNorm(x, r, w, 1e-6);
        return add(scale(sum, 0.7), mul(y, tensor(Float32Array.from(c), [2, 3, C])));
      },
      reference: ([x, r, w, b]) => {
        const s = plus(x, r), y = refNorm(s, C, kind === 'ln' ? 1e-5 : 1e-6, kind, w, b);
        return s.map((v, i) => 0.7 * v + c[i] * y[i]);
      },
    });
  });
}

test('addLayerNorm without affine, only the normalised output used', (t) =>
  checkOp(t, {
    inputs: [{ shape: [4, 9] }, { shape: [4, 9] }],
    forward: ([x, r]) => addLayerNorm(x, r, null, null, 1e-6).y,
    reference: ([x, r]) => refNorm(plus(x, r), 9, 1e-6, 'ln'),
  }));

test('addRmsNorm, only the residual stream used; r without gradient', (t) =>
  checkOp(t, {
    inputs: [{ shape: [4, 9] }, { shape: [4, 9], grad: false }, { shape: [9], grad: false }],
    forward: ([x, r, w]) => addRmsNorm(x, r, w, 1e-6).sum,
    reference: ([x, r]) => plus(x, r),
  }));

// Fused and unfused on the same values: forward outputs and every gradient bit for bit, with the residual stream
// used again afterwards (as the next sub-layer's residual add does).
for (const kind of ['ln', 'rms'] as const) {
  test(`${kind}: fused equals add then norm, bit for bit`, (t) => {
    const r0 = rng(17), R = 5, C = 33;
    const vals = [randn(r0, R * C), randn(r0, R * C), randn(r0, C), randn(r0, C), randn(r0, R * C)];
    const run = (fused: boolean) => scope(() => {
      const [x, r, w, b] = vals.slice(0, 4).map((v, i) => tensor(Float32Array.from(v), i < 2 ? [R, C] : [C], { requiresGrad: true }));
      let s: Tensor, y: Tensor;
      if (fused) ({ sum: s, y } = kind === 'ln' ? addLayerNorm(x, r, w, b, 1e-5) : addRmsNorm(x, r, w, 1e-6));
      else { s = add(x, r); y = kind === 'ln' ? layerNorm(s, w, b, 1e-5) : rmsNorm(s, w, 1e-6); }
      const out = add(mul(s, tensor(Float32Array.from(vals[4]), [R, C])), y);
      backward(out, tensor(new Float32Array(R * C).fill(1), [R, C]));
      const grads = (kind === 'ln' ? [x, r, w, b] : [x, r, w]).map((p) => Array.from(p.grad!.toFloat32()));
      return { s: Array.from(s.toFloat32()), y: Array.from(y.toFloat32()), grads };
    });
    const a = run(true), b = run(false);
    t.deepEqual(a.s, b.s, 'sum');
    t.deepEqual(a.y, b.y, 'normalised');
    a.grads.forEach((g, i) => t.deepEqual(g, b.grads[i], `gradient ${i}`));
  });
}

test('the fused norms refuse a residual of another shape or dtype', (t) => {
  const be = cpu();
  const x = be.full('f32', [2, 4], 1), r = be.full('f32', [2, 5], 1), ri = be.full('i32', [2, 4], 1), w = be.full('f32', [4], 1);
  t.throws(() => be.layerNormForward(x, w, null, 1e-5, r), { instanceOf: ShapeError, message: /residual/ });
  t.throws(() => be.rmsNormForward(x, w, 1e-6, ri), { instanceOf: DTypeError, message: /residual/ });
  for (const h of [x, r, ri, w]) h.dispose();
});
