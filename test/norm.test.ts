import test from 'ava';
import { layerNorm, rmsNorm, tensor, scope, backward, ShapeError, ArgumentError, DTypeError } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { randn, rng } from './helpers/rng.ts';

// float64 LayerNorm over rows of `cols`; w/b optional.
function refLayerNorm(x: Float64Array, cols: number, eps: number, w?: Float64Array, b?: Float64Array): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = 0, v = 0;
    for (let j = 0; j < cols; j++) m += x[r * cols + j];
    m /= cols;
    for (let j = 0; j < cols; j++) v += (x[r * cols + j] - m) ** 2;
    const rs = 1 / Math.sqrt(v / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = (x[r * cols + j] - m) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
  }
  return y;
}

// float64 RMSNorm (HF LLaMA): w · x · rsqrt(mean(x²) + eps).
function refRmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const cols = w.length, y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[r * cols + j] ** 2;
    const rs = 1 / Math.sqrt(ss / cols + eps);
    for (let j = 0; j < cols; j++) y[r * cols + j] = w[j] * x[r * cols + j] * rs;
  }
  return y;
}

test('layerNorm with weight and bias, 7 rows x 13 cols, eps 1e-5', (t) =>
  checkOp(t, {
    inputs: [{ shape: [7, 13] }, { shape: [13] }, { shape: [13] }],
    forward: ([x, w, b]) => layerNorm(x, w, b, 1e-5),
    reference: ([x, w, b]) => refLayerNorm(x, 13, 1e-5, w, b),
  }));

test('layerNorm without affine over a 3-D input, eps 1e-6', (t) =>
  checkOp(t, {
    inputs: [{ shape: [3, 5, 13] }],
    forward: ([x]) => layerNorm(x, null, null, 1e-6),
    reference: ([x]) => refLayerNorm(x, 13, 1e-6),
  }));

test('layerNorm with a weight only', (t) =>
  checkOp(t, {
    inputs: [{ shape: [5, 9] }, { shape: [9] }],
    forward: ([x, w]) => layerNorm(x, w, null, 1e-6),
    reference: ([x, w]) => refLayerNorm(x, 9, 1e-6, w),
  }));

test('layerNorm with a bias only', (t) =>
  checkOp(t, {
    inputs: [{ shape: [5, 9] }, { shape: [9] }],
    forward: ([x, b]) => layerNorm(x, null, b, 1e-5),
    reference: ([x, b]) => refLayerNorm(x, 9, 1e-5, undefined, b),
  }));

test('layerNorm statistics stay accurate with a large mean (two-pass variance)', (t) => {
  // With mean 100 and unit variance, fp32 E[x²] - mean² would lose ~1e-3 of the variance.
  const r = rng(7), n = 7 * 13;
  const x = randn(r, n).map((v, i) => v + 100 + (i % 3));
  checkOp(t, {
    inputs: [{ shape: [7, 13], values: x }, { shape: [13] }, { shape: [13] }],
    forward: ([xt, w, b]) => layerNorm(xt, w, b, 1e-5),
    reference: ([xr, w, b]) => refLayerNorm(xr, 13, 1e-5, w, b),
  });
});

test('rmsNorm, 7 rows x 13 cols, eps 1e-6', (t) =>
  checkOp(t, {
    inputs: [{ shape: [7, 13] }, { shape: [13] }],
    forward: ([x, w]) => rmsNorm(x, w, 1e-6),
    reference: ([x, w]) => refRmsNorm(x, w, 1e-6),
  }));

test('rmsNorm over a 3-D input, eps 1e-5', (t) =>
  checkOp(t, {
    inputs: [{ shape: [2, 3, 11] }, { shape: [11] }],
    forward: ([x, w]) => rmsNorm(x, w, 1e-5),
    reference: ([x, w]) => refRmsNorm(x, w, 1e-5),
  }));

test('frozen norm weights get no gradient, the input still does', (t) => {
  scope(() => {
    const r = rng(3);
    const x = tensor(Float32Array.from(randn(r, 35)), [5, 7], { requiresGrad: true });
    const w = tensor(Float32Array.from(randn(r, 7)), [7]), b = tensor(Float32Array.from(randn(r, 7)), [7]);
    backward(layerNorm(x, w, b, 1e-5), tensor(Float32Array.from(randn(r, 35)), [5, 7]));
    t.truthy(x.grad);
    t.is(w.grad, null);
    t.is(b.grad, null);
    x.grad!.dispose();
    x.grad = null;
    backward(rmsNorm(x, w, 1e-6), tensor(Float32Array.from(randn(r, 35)), [5, 7]));
    t.truthy(x.grad);
    t.is(w.grad, null);
  });
});

test('backward natives return only the gradients asked for', (t) => {
  const be = cpu();
  const x = be.fromBuffer('f32', [3, 4], Float32Array.from(randn(rng(1), 12)));
  const w = be.full('f32', [4], 1.5), b = be.full('f32', [4], 0.5), gy = be.full('f32', [3, 4], 1);
  const [y, mean, rstd] = be.layerNormForward(x, w, b, 1e-5);
  t.deepEqual(mean.shape, [3]);
  t.deepEqual(rstd.shape, [3]);
  const onlyX = be.layerNormBackward(gy, x, w, mean, rstd, true, false);
  t.truthy(onlyX[0]);
  t.is(onlyX[1], null);
  t.is(onlyX[2], null);
  const onlyW = be.layerNormBackward(gy, x, w, mean, rstd, false, true);
  t.is(onlyW[0], null);
  t.deepEqual(onlyW[1]!.shape, [4]);
  t.deepEqual(Array.from(new Float32Array(onlyW[2]!.read())), [3, 3, 3, 3]); // gb = column sums of gy
  const [ry, rs] = be.rmsNormForward(x, w, 1e-6);
  const rOnlyW = be.rmsNormBackward(gy, x, w, rs, false, true);
  t.is(rOnlyW[0], null);
  t.truthy(rOnlyW[1]);
  for (const h of [x, w, b, gy, y, mean, rstd, ...onlyX, ...onlyW, ry, rs, ...rOnlyW]) h?.dispose();
});

test('weight gradients do not depend on the thread count', (t) => {
  const be = cpu();
  const rows = 1001, cols = 67, r = rng(11);
  const x = be.fromBuffer('f32', [rows, cols], Float32Array.from(randn(r, rows * cols)));
  const gy = be.fromBuffer('f32', [rows, cols], Float32Array.from(randn(r, rows * cols)));
  const w = be.fromBuffer('f32', [cols], Float32Array.from(randn(r, cols)));
  const run = (threads: number) => {
    be.setNumThreads(threads);
    const [y, mean, rstd] = be.layerNormForward(x, w, w, 1e-5);
    const grads = be.layerNormBackward(gy, x, w, mean, rstd, true, true);
    const [ry, rs] = be.rmsNormForward(x, w, 1e-6);
    const rgrads = be.rmsNormBackward(gy, x, w, rs, true, true);
    const out = [...grads, ...rgrads].map((h) => new Float32Array(h!.read()));
    for (const h of [y, mean, rstd, ...grads, ry, rs, ...rgrads]) h?.dispose();
    return out;
  };
  const one = run(1), two = run(2), three = run(3);
  be.setNumThreads(2);
  for (let i = 0; i < one.length; i++) {
    t.deepEqual(two[i], one[i], `output ${i} differs between 1 and 2 threads`);
    t.deepEqual(three[i], one[i], `output ${i} differs between 1 and 3 threads`);
  }
  for (const h of [x, gy, w]) h.dispose();
});

test('bad arguments give typed errors naming the op and shapes', (t) => {
  scope(() => {
    const x = tensor(new Float32Array(12), [3, 4]);
    const w5 = tensor(new Float32Array(5), [5]), w4 = tensor(new Float32Array(4), [4]);
    const e1 = t.throws(() => layerNorm(x, w5, null, 1e-5), { instanceOf: ShapeError });
    t.regex(e1!.message, /layerNormForward: w f32\[5\]\S* must be \[4\].*f32\[3,4\]/);
    t.throws(() => layerNorm(x, w4, w5, 1e-5), { instanceOf: ShapeError });
    t.throws(() => rmsNorm(x, w5, 1e-5), { instanceOf: ShapeError });
    t.throws(() => layerNorm(x, w4, null, 0), { instanceOf: ArgumentError });
    t.throws(() => rmsNorm(x, w4, -1), { instanceOf: ArgumentError });
    t.throws(() => rmsNorm(x, w4, Number.NaN), { instanceOf: ArgumentError });
    const xi = tensor(new Int32Array(12), [3, 4]);
    t.throws(() => layerNorm(xi, null, null, 1e-5), { instanceOf: DTypeError });
    const be = cpu();
    const [y, mean, rstd] = be.layerNormForward(x.handle, null, null, 1e-5);
    const e2 = t.throws(() => be.layerNormBackward(x.handle, x.handle, null, rstd, x.handle, true, false),
      { instanceOf: ShapeError });
    t.regex(e2!.message, /rstd f32\[3,4\]\S* must be \[3\]/);
    const gyBad = tensor(new Float32Array(8), [2, 4]);
    t.throws(() => be.layerNormBackward(gyBad.handle, x.handle, null, mean, rstd, true, false), { instanceOf: ShapeError });
    for (const h of [y, mean, rstd]) h.dispose();
  });
});
