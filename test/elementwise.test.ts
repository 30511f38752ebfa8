import test from 'ava';
import { add, sub, mul, scale } from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';

const zip = (a: Float64Array, b: Float64Array, f: (x: number, y: number) => number) => {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f(a[i], b[i % b.length]);
  return out;
};

test('add with alpha/beta, same shape', (t) =>
  checkOp(t, { inputs: [{ shape: [3, 5] }, { shape: [3, 5] }], forward: ([a, b]) => add(a, b, 0.5, -2),
    reference: ([a, b]) => zip(a, b, (x, y) => 0.5 * x - 2 * y) }));

test('add broadcasts a bias over leading axes', (t) =>
  checkOp(t, { inputs: [{ shape: [2, 3, 7] }, { shape: [7] }], forward: ([a, b]) => add(a, b),
    reference: ([a, b]) => zip(a, b, (x, y) => x + y) }));

test('sub', (t) =>
  checkOp(t, { inputs: [{ shape: [11] }, { shape: [11] }], forward: ([a, b]) => sub(a, b),
    reference: ([a, b]) => zip(a, b, (x, y) => x - y) }));

test('mul with broadcast', (t) =>
  checkOp(t, { inputs: [{ shape: [5, 3] }, { shape: [3] }], forward: ([a, b]) => mul(a, b),
    reference: ([a, b]) => zip(a, b, (x, y) => x * y) }));

test('scale', (t) =>
  checkOp(t, { inputs: [{ shape: [9] }], forward: ([a]) => scale(a, -1.75), reference: ([a]) => a.map((x) => -1.75 * x) }));
