import test from 'ava';
import {
  backward, linear, quickGelu, quickGeluLinear, scope, tapeSaved, tensor, ShapeError, type Tensor,
} from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { matmulRef } from './helpers/reference.ts';
import { randn, rng } from './helpers/rng.ts';

const qg = (v: number) => v / (1 + Math.exp(-1.702 * v));

test('quickGeluLinear = quickGelu(h)·Wᵀ + b, gradients of h, W and b against float64', (t) => {
  const B = 2, T = 3, K = 6, N = 4;
  checkOp(t, {
    inputs: [{ shape: [B, T, K] }, { shape: [N, K], std: 0.5 }, { shape: [N] }],
    forward: ([h, w, b]) => quickGeluLinear(h, w, b),
    reference: ([h, w, b]) => {
      const y = matmulRef(h.map(qg), w, 1, B * T, K, N, false, true, true);
      for (let i = 0; i < y.length; i++) y[i] += b[i % N];
      return y;
    },
  });
});

test('quickGeluLinear without a bias, and with the weight frozen (gradient of h only)', (t) => {
  const M = 5, K = 3, N = 7;
  checkOp(t, {
    inputs: [{ shape: [M, K] }, { shape: [N, K], grad: false }],
    forward: ([h, w]) => quickGeluLinear(h, w),
    reference: ([h, w]) => matmulRef(h.map(qg), w, 1, M, K, N, false, true, true),
  });
});

// Bit-for-bit what quickGelu() then linear() give: the same kernels on the same values, in the backward too.
test('quickGeluLinear equals quickGelu then linear exactly, forward and every gradient', (t) => {
  const r = rng(7);
  const make = () => [tensor(Float32Array.from(randn(r, 4 * 9 * 16)), [4, 9, 16], { requiresGrad: true }),
    tensor(Float32Array.from(randn(r, 12 * 16, 0.3)), [12, 16], { requiresGrad: true }),
    tensor(Float32Array.from(randn(r, 12)), [12], { requiresGrad: true })];
  const [h, w, b] = make();
  const run = (f: (h: Tensor) => Tensor) => scope(() => {
    for (const p of [h, w, b]) { p.grad?.dispose(); p.grad = null; }
    const y = f(h);
    const g = tensor(Float32Array.from(randn(rng(3), y.numel)), [...y.shape]);
    backward(y, g);
    return [y.toFloat32(), h.grad!.toFloat32(), w.grad!.toFloat32(), b.grad!.toFloat32()];
  });
  const fused = run((x) => quickGeluLinear(x, w, b));
  const plain = run((x) => linear(quickGelu(x), w, b));
  ['y', 'dh', 'dW', 'db'].forEach((name, i) => t.deepEqual(fused[i], plain[i], name));
  for (const p of [h, w, b]) p.dispose();
});

test('quickGeluLinear keeps h for backward, not quickGelu(h); a frozen h keeps no weight', (t) => {
  scope(() => {
    const h = tensor(new Float32Array(24), [4, 6], { requiresGrad: true });
    const w = tensor(new Float32Array(18), [3, 6], { requiresGrad: true });
    quickGeluLinear(h, w);
    const saved = tapeSaved().at(-1)!;
    t.is(saved.op, 'quickGeluLinear');
    t.deepEqual(saved.saved.map((s) => s.shape), [[4, 6], [3, 6]]);
    t.is(saved.saved[0].handle.storageId, h.handle.storageId);
    const hf = tensor(new Float32Array(24), [4, 6]);
    quickGeluLinear(hf, w);
    t.deepEqual(tapeSaved().at(-1)!.saved.map((s) => s.handle.storageId), [hf.handle.storageId]);
    backward(quickGeluLinear(h, w), tensor(new Float32Array(12).fill(1), [4, 3]));
  });
});

test('quickGeluLinear refuses a weight that does not fit', (t) => {
  scope(() => {
    const h = tensor(new Float32Array(12), [2, 6]);
    t.throws(() => quickGeluLinear(h, tensor(new Float32Array(10), [2, 5])), { instanceOf: ShapeError, message: /quickGeluLinear: weight/ });
    t.throws(() => quickGeluLinear(h, tensor(new Float32Array(12), [2, 6]), tensor(new Float32Array(3), [3])), { instanceOf: ShapeError, message: /bias/ });
  });
});
