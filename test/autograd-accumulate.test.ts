// Gradient accumulation when one backward hands the same storage to several inputs (add passes its incoming gradient
// to both operands): a later contribution to one of them must not change the others. These graphs gave 11 and 45
// where 1 and 21 are right while accumulation summed in place into a shared storage.
import test from 'ava';
import { add, backward, mul, scale, scope, tensor } from '../lib/tensor/index.ts';

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
