// backward()'s onGradReady hook (what the overlapped gradient all-reduce starts from): each leaf is reported once,
// when its gradient has reached its final value, in back-propagation order; a leaf on the tape that receives no
// gradient is reported too (without one); nothing is reported without the option.
import test from 'ava';
import { add, backward, linear, scope, tensor, type Tensor } from '../lib/tensor/index.ts';

const seq = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => ((i * 7 + k) % 11) / 10 - 0.5);

test('each leaf is reported once, after its last accumulation, in back-propagation order', (t) => {
  const w1 = tensor(seq(12, 1), [4, 3], { requiresGrad: true, name: 'w1' });  // used first and again last
  const w2 = tensor(seq(20, 2), [5, 4], { requiresGrad: true, name: 'w2' });  // used once, in the middle
  const w3 = tensor(seq(15, 3), [3, 5], { requiresGrad: true, name: 'w3' });  // used once, at the end
  const dead = tensor(seq(12, 4), [4, 3], { requiresGrad: true, name: 'dead' }); // its output never reaches the loss
  const frozen = tensor(seq(9, 5), [3, 3]);
  const seen: { name: string; grad: number[] | null }[] = [];
  scope(() => {
    const x = tensor(seq(6, 6), [2, 3]);
    const h1 = linear(x, w1);          // [2,4]
    linear(x, dead);                   // recorded, gets no gradient
    const h2 = linear(h1, w2);         // [2,5]
    const h3 = linear(h2, w3);         // [2,3]
    const h4 = linear(linear(h3, frozen), w1); // w1 again: [2,4]
    const y = add(h4, h1);
    backward(y, undefined, { onGradReady: (leaf: Tensor) => seen.push({ name: leaf.name!, grad: leaf.grad ? Array.from(leaf.grad.toFloat32()) : null }) });
  });
  t.deepEqual(seen.map((s) => s.name).sort(), ['dead', 'w1', 'w2', 'w3'], 'every leaf on the tape, once');
  const order = seen.map((s) => s.name);
  t.true(order.indexOf('w3') < order.indexOf('w2') && order.indexOf('w2') < order.indexOf('w1'), order.join(' '));
  t.is(order.indexOf('w1'), 3, 'w1 is used by the first node on the tape: reported last');
  for (const s of seen) {
    const w = { w1, w2, w3, dead }[s.name]!;
    if (s.name === 'dead') { t.is(s.grad, null); t.is(w.grad, null); continue; }
    t.deepEqual(s.grad, Array.from(w.grad!.toFloat32()), `${s.name}: the reported gradient is the final one`);
  }
  for (const w of [w1, w2, w3, dead, frozen]) w.dispose();
});

test('without the option nothing changes: the same gradients, nothing reported', (t) => {
  const grads = (hook: boolean) => {
    const w = tensor(seq(12, 1), [4, 3], { requiresGrad: true });
    let calls = 0;
    scope(() => {
      const x = tensor(seq(6, 6), [2, 3]);
      backward(add(linear(x, w), linear(x, w)), undefined, hook ? { onGradReady: () => { calls++; } } : {});
    });
    const g = Array.from(w.grad!.toFloat32());
    w.dispose();
    return { g, calls };
  };
  const a = grads(false), b = grads(true);
  t.deepEqual(a.g, b.g);
  t.is(a.calls, 0);
  t.is(b.calls, 1);
});
