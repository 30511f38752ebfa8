import test from 'ava';
import { argmaxRows, crossEntropy, tensor, backward, scope, ArgumentError, ShapeError, DTypeError, liveTensors } from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { randn, rng } from './helpers/rng.ts';

// float64 reference: mean over non-ignored rows of logsumexp(x_row) - x_row[label].
function refCE(x: Float64Array, labels: ArrayLike<number>, V: number, ignore: number): Float64Array {
  let sum = 0, count = 0;
  for (let r = 0; r < labels.length; r++) {
    if (labels[r] === ignore) continue;
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, x[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(x[r * V + j] - m);
    sum += Math.log(s) + m - x[r * V + labels[r]];
    count++;
  }
  return Float64Array.of(count === 0 ? 0 : sum / count);
}

test('cross entropy matches float64 log-softmax, with ignored rows, forward and backward', (t) => {
  const N = 7, V = 13;
  const labels = [3, -100, 0, 12, 5, -100, 7];
  checkOp(t, {
    inputs: [{ shape: [N, V], std: 3 }, { shape: [N], dtype: 'i32', values: labels }],
    forward: ([x, l]) => crossEntropy(x, l),
    reference: ([x]) => refCE(x, labels, V, -100),
  });
});

test('cross entropy over [B, T, V] logits with a custom ignore index', (t) => {
  const B = 2, T = 3, V = 11;
  const labels = [1, 10, 4, 4, 0, 9];
  checkOp(t, {
    inputs: [{ shape: [B, T, V] }, { shape: [B, T], dtype: 'i32', values: labels }],
    forward: ([x, l]) => crossEntropy(x, l, 4),
    reference: ([x]) => refCE(x, labels, V, 4),
  });
});

test('cross entropy is stable for large logits and a wide vocabulary', (t) => {
  const N = 5, V = 1031;
  const r = rng(7);
  const x = randn(r, N * V, 4);
  for (let i = 0; i < x.length; i++) x[i] += i % 2 ? 1000 : -1000; // exp would overflow without max subtraction
  const xf = Float32Array.from(x);
  const labels = Int32Array.from([0, 1, 1030, 517, 2]);
  scope(() => {
    const loss = crossEntropy(tensor(xf, [N, V]), tensor(labels, [N]));
    const want = refCE(Float64Array.from(xf), labels, V, -100)[0];
    const got = loss.item();
    t.true(Number.isFinite(got));
    t.true(Math.abs(got - want) / want < 1e-6, `${got} vs ${want}`);
  });
});

test('a batch with every row ignored gives loss 0 and a zero gradient, never NaN', (t) => {
  const live = liveTensors();
  scope(() => {
    const x = tensor(Float32Array.from(randn(rng(3), 4 * 9)), [4, 9], { requiresGrad: true });
    const loss = crossEntropy(x, tensor(Int32Array.from([-100, -100, -100, -100]), [4]));
    t.deepEqual(loss.shape, [1]);
    t.is(loss.item(), 0);
    backward(loss);
    t.truthy(x.grad);
    t.true(x.grad!.toArray().every((v) => v === 0));
    x.grad!.dispose();
    x.grad = null;
  });
  t.is(liveTensors(), live);
});

test('dlogits rows sum to zero and ignored rows get no gradient', (t) => {
  const N = 3, V = 6;
  const be = cpu();
  const x = be.fromBuffer('f32', [N, V], Float32Array.from(randn(rng(11), N * V)));
  const l = be.fromBuffer('i32', [N], Int32Array.from([2, -100, 5]));
  const [loss, d] = be.crossEntropy(x, l, -100);
  const g = new Float32Array(d.read());
  for (let r = 0; r < N; r++) {
    const row = g.subarray(r * V, (r + 1) * V);
    const s = row.reduce((a, b) => a + b, 0);
    t.true(Math.abs(s) < 1e-6, `row ${r} sums to ${s}`);
    if (r === 1) t.true(row.every((v) => v === 0));
  }
  t.deepEqual(loss.shape, [1]);
  for (const h of [x, l, loss, d]) h.dispose();
});

test('a NaN logit makes the loss NaN instead of hiding it', (t) => {
  scope(() => {
    const x = Float32Array.from(randn(rng(5), 2 * 5));
    x[7] = NaN;
    const loss = crossEntropy(tensor(x, [2, 5]), tensor(Int32Array.from([1, 2]), [2]));
    t.true(Number.isNaN(loss.item()));
  });
});

test('a label outside [0, V) that is not ignored is an ArgumentError naming the row and label', (t) => {
  scope(() => {
    const x = tensor(Float32Array.from(randn(rng(2), 3 * 5)), [3, 5]);
    const e = t.throws(() => crossEntropy(x, tensor(Int32Array.from([1, 5, 0]), [3])), { instanceOf: ArgumentError });
    t.regex(e!.message, /label 5 at row 1/);
    t.throws(() => crossEntropy(x, tensor(Int32Array.from([1, 0, -1]), [3])), { instanceOf: ArgumentError, message: /label -1 at row 2/ });
  });
});

test('cross entropy rejects mismatched shapes and dtypes with typed errors', (t) => {
  scope(() => {
    const x = tensor(Float32Array.from(randn(rng(2), 3 * 5)), [3, 5]);
    t.throws(() => crossEntropy(x, tensor(Int32Array.from([1, 2]), [2])), { instanceOf: ShapeError });
    t.throws(() => crossEntropy(x, tensor(Float32Array.from([1, 2, 3]), [3])), { instanceOf: DTypeError });
    t.throws(() => crossEntropy(tensor(Float32Array.from([1, 2, 3]), [3]), tensor(Int32Array.from([1]), [1])), { instanceOf: ShapeError });
  });
});

test('mulScalarInplace scales in place by a one-element tensor and rejects anything else', (t) => {
  const be = cpu();
  const x = be.fromBuffer('f32', [2, 3], Float32Array.of(1, 2, 3, 4, 5, 6));
  const s = be.fromBuffer('f32', [1], Float32Array.of(-0.5));
  be.mulScalarInplace(x, s);
  t.deepEqual(Array.from(new Float32Array(x.read())), [-0.5, -1, -1.5, -2, -2.5, -3]);
  const two = be.full('f32', [2], 1);
  t.throws(() => be.mulScalarInplace(x, two), { instanceOf: ShapeError });
  for (const h of [x, s, two]) h.dispose();
});

test('argmaxRows: the first maximum of each row, NaN never wins, any leading shape; i32 out', (t) => {
  scope(() => {
    const R = 11, V = 37, r = rng(5);
    const x = Float32Array.from(randn(r, R * V));
    x[2 * V + 4] = x[2 * V + 30] = 9; // a tie: the first index wins
    x[3 * V] = NaN; x[3 * V + 1] = 50; // NaN is skipped, not a maximum
    for (let j = 0; j < V; j++) x[5 * V + j] = NaN; // a row of NaN gives 0
    x[6 * V + V - 1] = Infinity;
    const got = argmaxRows(tensor(x, [1, R, V]));
    t.is(got.dtype, 'i32');
    t.deepEqual(got.shape, [R]);
    const want = Array.from({ length: R }, (_, i) => {
      let best = -1;
      for (let j = 0; j < V; j++) { const v = x[i * V + j]; if (!Number.isNaN(v) && (best < 0 || v > x[i * V + best])) best = j; }
      return Math.max(best, 0);
    });
    t.deepEqual(Array.from(got.data<'i32'>()), want);
    t.deepEqual([want[2], want[3], want[5], want[6]], [4, 1, 0, V - 1]);
    t.throws(() => argmaxRows(tensor(new Int32Array(3), [3], { dtype: 'i32' })), { instanceOf: DTypeError });
  });
});
