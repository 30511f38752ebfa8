// checkpoint(fn, inputs): the same forward and the same gradients (inputs, closed-over parameters, closed-over outer
// activations) as calling fn directly, bit for bit, with dropout inside; one tape node; nothing leaks; the
// onGradReady hook reports a parameter used inside a block once, after the recomputation's backward.
import test from 'ava';
import { ForwardContext } from '../lib/model/context.ts';
import {
  add, backward, checkpoint, dropout, linear, liveTensors, mul, noGrad, rmsNorm, scope, silu, tapeLength, tensor,
  type Tensor,
} from '../lib/tensor/index.ts';

const seq = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.37 + k) * 0.8);
const bits = (t: Tensor) => Buffer.from(t.toFloat32().buffer).toString('hex');

/** Parameters of a small two-block net: w1, n1 inside block 1, w2 inside block 2, w0 before and inside block 1. */
function params() {
  return {
    w0: tensor(seq(35, 1), [7, 5], { requiresGrad: true, name: 'w0' }),
    w1: tensor(seq(35, 2), [5, 7], { requiresGrad: true, name: 'w1' }),
    n1: tensor(seq(7, 3).map((v) => 1 + v / 4), [7], { requiresGrad: true, name: 'n1' }),
    w2: tensor(seq(49, 4), [7, 7], { requiresGrad: true, name: 'w2' }),
  };
}
type P = ReturnType<typeof params>;

/**
 * x [3, 5] -> loss: h = x w0ᵀ, then block 1 (takes h and a gate that needs no grad, closes over w0, w1, n1 and over
 * `c`, an outer activation computed from w2), then block 2 with two outputs. Dropout draws a seed from ctx each call.
 */
function net(p: P, x: Tensor, gate: Tensor, ctx: ForwardContext, ck: (f: (...a: Tensor[]) => Tensor | Tensor[], xs: Tensor[]) => Tensor | Tensor[]) {
  const h = linear(x, p.w0);                                  // [3, 7]
  const c = silu(linear(h, p.w2));                            // outer activation, closed over by block 1
  const block1 = (hh: Tensor, g: Tensor) => {
    const a = rmsNorm(hh, p.n1, 1e-6);
    const d = dropout(silu(linear(linear(a, p.w1) /* [3,5] */, p.w0)), 0.3, ctx.nextSeed());
    return add(mul(add(d, c), g), hh);                        // hh used twice inside
  };
  const block2 = (hh: Tensor) => {
    const z = dropout(linear(hh, p.w2), 0.25, ctx.nextSeed());
    return [silu(z), mul(z, hh)];
  };
  const b1 = ck(ctx.replayingSeeds(block1) as (...a: Tensor[]) => Tensor, [h, gate]) as Tensor;
  const [u, v] = ck(ctx.replayingSeeds(block2) as (...a: Tensor[]) => Tensor[], [b1]) as Tensor[];
  return add(mul(u, u), v, 1, 0.5);
}

const direct = (f: (...a: Tensor[]) => Tensor | Tensor[], xs: Tensor[]) => f(...xs);

function run(p: P, recompute: boolean, o: { ready?: (t: Tensor) => void } = {}) {
  return scope(() => {
    const x = tensor(seq(15, 9), [3, 5], { requiresGrad: true, name: 'x' });
    const gate = tensor(seq(21, 10), [3, 7]);
    const ctx = new ForwardContext(new Map(), true);
    const y = net(p, x, gate, ctx, recompute ? checkpoint : direct);
    const nodes = tapeLength();
    const out = bits(y);
    backward(y, tensor(seq(21, 11), [3, 7]), o.ready ? { onGradReady: o.ready } : {});
    const grads: Record<string, string> = { x: bits(x.grad!) };
    for (const [k, w] of Object.entries(p)) { grads[k] = bits(w.grad!); w.grad!.dispose(); w.grad = null; }
    x.grad!.dispose();
    x.grad = null;
    return { out, grads, nodes, rngState: ctx.rngState };
  });
}

test('checkpoint gives the forward and every gradient of the plain tape, bit for bit, with dropout inside', (t) => {
  const p = params();
  const plain = run(p, false), ck = run(p, true);
  t.is(ck.out, plain.out, 'forward');
  t.deepEqual(Object.keys(ck.grads).sort(), ['n1', 'w0', 'w1', 'w2', 'x']);
  for (const k of Object.keys(plain.grads)) t.is(ck.grads[k], plain.grads[k], `gradient of ${k}`);
  t.is(ck.rngState, plain.rngState, 'the recomputation leaves the seed stream where the forward left it');
  t.true(ck.nodes < plain.nodes, `${ck.nodes} tape nodes with checkpoints, ${plain.nodes} without`);
  for (const w of Object.values(p)) w.dispose();
});

test('the seeds must replay: without replayingSeeds the recomputed dropout masks differ', (t) => {
  const p = params();
  const want = run(p, false).grads.w1;
  const got = scope(() => {
    const x = tensor(seq(15, 9), [3, 5], { requiresGrad: true });
    const ctx = new ForwardContext(new Map(), true);
    const block = (hh: Tensor) => dropout(silu(linear(linear(rmsNorm(hh, p.n1, 1e-6), p.w1), p.w0)), 0.3, ctx.nextSeed());
    const y = checkpoint(block, [linear(x, p.w0)]);
    backward(y, tensor(seq(21, 11), [3, 7]));
    return bits(p.w1.grad!);
  });
  t.not(got, want);
  for (const w of Object.values(p)) w.dispose();
});

test('one tape node per block; under noGrad it is fn itself; no tensor leaks', (t) => {
  const p = params();
  run(p, true); // warm up (first-call allocations)
  const live = liveTensors();
  scope(() => {
    const before = tapeLength();
    const y = checkpoint((a: Tensor) => silu(linear(linear(a, p.w1), p.w0)), [tensor(seq(21, 5), [3, 7])]);
    t.is(tapeLength() - before, 1, 'one node for the whole block');
    backward(y, tensor(seq(21, 6), [3, 7]));
    t.is(tapeLength(), 0);
    noGrad(() => {
      const z = checkpoint((a: Tensor) => silu(linear(a, p.w2)), [tensor(seq(21, 5), [3, 7])]);
      t.false(z.requiresGrad);
      t.is(tapeLength(), 0);
    });
  });
  for (const w of Object.values(p)) { w.grad?.dispose(); w.grad = null; }
  run(p, true);
  t.is(liveTensors(), live, 'the recomputation frees its activations and its private tape');
  for (const w of Object.values(p)) w.dispose();
});

test('nested checkpoints give the plain gradients', (t) => {
  const p = params();
  const grads = (nest: boolean) => scope(() => {
    const x = tensor(seq(21, 7), [3, 7], { requiresGrad: true });
    const inner = (a: Tensor) => silu(linear(a, p.w2));
    const outer = (a: Tensor) => add(linear(linear(nest ? checkpoint(inner, [a]) : inner(a), p.w1), p.w0), a);
    const y = nest ? checkpoint(outer, [x]) : outer(x);
    backward(y, tensor(seq(21, 8), [3, 7]));
    const r = [bits(x.grad!), bits(p.w0.grad!), bits(p.w1.grad!), bits(p.w2.grad!)];
    for (const w of [x, p.w0, p.w1, p.w2]) { w.grad!.dispose(); w.grad = null; }
    return r;
  });
  t.deepEqual(grads(true), grads(false));
  for (const w of Object.values(p)) w.dispose();
});

test('onGradReady reports each parameter once, after its final gradient, with blocks on the tape', (t) => {
  const p = params();
  const order = (recompute: boolean) => {
    const seen: { name: string; grad: string | null; final?: string }[] = [];
    const byName = new Map<string, Tensor>(Object.entries(p));
    const r = run(p, recompute, { ready: (leaf) => seen.push({ name: leaf.name!, grad: leaf.grad ? bits(leaf.grad) : null }) });
    for (const s of seen) if (byName.has(s.name)) s.final = r.grads[s.name];
    return { seen, r };
  };
  const plain = order(false), ck = order(true);
  const names = ck.seen.map((s) => s.name);
  t.deepEqual([...names].sort(), ['n1', 'w0', 'w1', 'w2', 'x'], 'every leaf once');
  for (const s of ck.seen) t.is(s.grad, s.final ?? ck.r.grads.x, `${s.name}: reported with its final gradient`);
  // w1 and n1 are used only inside block 1: final once block 1's recomputation is back-propagated, before w2 (used
  // in block 2, but first outside, before block 1); w0 and x are used first of all, so they are final last.
  t.deepEqual(names.slice(0, 2).sort(), ['n1', 'w1'], names.join(' '));
  t.is(names[2], 'w2', names.join(' '));
  t.deepEqual(names.slice(-2).sort(), ['w0', 'x'], names.join(' '));
  t.deepEqual(plain.seen.map((s) => s.name).sort(), [...names].sort());
  for (const w of Object.values(p)) w.dispose();
});

test('bad blocks: returning an input, or one tensor twice, is a typed error', (t) => {
  const w = tensor(seq(9, 1), [3, 3], { requiresGrad: true });
  scope(() => {
    const x = tensor(seq(6, 2), [2, 3], { requiresGrad: true });
    t.throws(() => checkpoint((a: Tensor) => a, [x]), { message: /returned .* it was given/ });
    t.throws(() => checkpoint((a: Tensor) => { const y = linear(a, w); return [y, y]; }, [x]), { message: /twice/ });
  });
  w.dispose();
});
