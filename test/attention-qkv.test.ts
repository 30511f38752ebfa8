// Packed self-attention (attentionQkv: q, k, v read out of one [B, T, H, 3, D] tensor, the gradient written into
// one): on the CPU backend it must equal split + reshape + attention bit for bit — output and the gradient that
// reaches qkv — with and without causal masking, a key mask and dropout; match float64 finite differences; leave
// nothing behind; and refuse wrong shapes, dtypes and options with typed errors naming the argument.
import test from 'ava';
import { cpu } from '../lib/native.ts';
import {
  attention, attentionQkv, backward, reshape, scope, split, tensor, liveTensors, clearTape, tapeLength, ShapeError,
  DTypeError, ArgumentError, type AttentionOptions, type Tensor,
} from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { attentionRef } from './helpers/reference.ts';
import { randn, rng } from './helpers/rng.ts';

interface Case { B: number; T: number; H: number; D: number; opts?: AttentionOptions; mask?: number[] }

const bits = (t: Tensor) => Buffer.from(t.toFloat32().buffer).toString('hex');

// Output and qkv's gradient (as bytes) of `f` applied to the same random qkv and upstream gradient.
function run(c: Case, f: (qkv: Tensor, opts: AttentionOptions) => Tensor) {
  const { B, T, H, D } = c;
  const r = rng(B * 1000 + T * 10 + H + D);
  return scope(() => {
    const qkv = tensor(Float32Array.from(randn(r, B * T * H * 3 * D)), [B, T, H, 3, D], { requiresGrad: true });
    const keyMask = c.mask ? tensor(Int32Array.from(c.mask), [B, T]) : null;
    const y = f(qkv, { ...c.opts, keyMask });
    backward(y, tensor(Float32Array.from(randn(r, B * T * H * D)), [B, T, H, D]));
    const out = { y: bits(y), g: bits(qkv.grad!), shape: y.shape };
    qkv.grad!.dispose();
    return out;
  });
}

// What vision.ts did before attentionQkv: three strided copies out of qkv, attention, and their gradients concatenated.
const unpacked = (qkv: Tensor, opts: AttentionOptions) => {
  const [B, T, H, , D] = qkv.shape;
  const [q, k, v] = split(qkv, 3, [1, 1, 1]).map((x) => reshape(x, [B, T, H, D]));
  return attention(q, k, v, opts);
};

function same(t: import('ava').ExecutionContext, c: Case) {
  const live = liveTensors();
  const a = run(c, attentionQkv), b = run(c, unpacked);
  t.deepEqual(a.shape, [c.B, c.T, c.H, c.D]);
  t.is(a.y, b.y, 'output');
  t.is(a.g, b.g, 'gradient of qkv');
  t.is(tapeLength(), 0);
  t.is(liveTensors(), live, 'no tensor leaks');
}

const maskOf = (B: number, T: number, seed: number) => {
  const r = rng(seed);
  const m = Array.from({ length: B * T }, () => (r() < 0.3 ? 0 : 1));
  for (let j = 0; j < T; j++) m[j] = 0;  // batch 0: every key masked (rows with nothing to see)
  return m;
};

test('equals split + attention bit for bit: full, odd sizes (B2 T7 H3 D5)', (t) =>
  same(t, { B: 2, T: 7, H: 3, D: 5 }));
test('equals split + attention bit for bit: causal, several query blocks (T 70)', (t) =>
  same(t, { B: 1, T: 70, H: 2, D: 4, opts: { causal: true } }));
test('equals split + attention bit for bit: key mask with a fully masked batch, arbitrary scale', (t) =>
  same(t, { B: 3, T: 9, H: 2, D: 3, opts: { scale: 0.77 }, mask: maskOf(3, 9, 5) }));
test('equals split + attention bit for bit: dropout', (t) =>
  same(t, { B: 2, T: 11, H: 2, D: 4, opts: { dropoutP: 0.3, seed: 12345 } }));
test('equals split + attention bit for bit: causal + key mask + dropout, the ViT\'s 257 tokens', (t) =>
  same(t, { B: 2, T: 257, H: 2, D: 8, opts: { causal: true, dropoutP: 0.1, seed: 2 ** 40 + 7 }, mask: maskOf(2, 257, 9) }));

// Not only equal to the unpacked op: right, against float64 finite differences of the reference on q, k, v.
test('forward and gradient against float64 finite differences (causal, key mask, dropout)', (t) => {
  const B = 2, T = 5, H = 2, D = 3, mask = [1, 0, 1, 1, 1, 1, 1, 0, 1, 1];
  const unpack = (x: Float64Array, part: number) => {
    const y = new Float64Array(B * T * H * D);
    for (let r = 0; r < B * T * H; r++) for (let d = 0; d < D; d++) y[r * D + d] = x[(3 * r + part) * D + d];
    return y;
  };
  checkOp(t, {
    inputs: [{ shape: [B, T, H, 3, D] }, { shape: [B, T], dtype: 'i32', values: mask }],
    forward: ([qkv, m]) => attentionQkv(qkv, { causal: true, keyMask: m, dropoutP: 0.25, seed: 77 }),
    reference: ([qkv, m]) => attentionRef(unpack(qkv, 0), unpack(qkv, 1), unpack(qkv, 2), m, { B, Tq: T, Tk: T, H, D },
      true, 1 / Math.sqrt(D), 0.25, 77, new Float64Array(B * T * H * D)).out,
  });
});

test('a qkv that needs no gradient records nothing', (t) => {
  scope(() => {
    const qkv = tensor(new Float32Array(2 * 3 * 2 * 3 * 4).fill(0.5), [2, 3, 2, 3, 4]);
    const y = attentionQkv(qkv);
    t.deepEqual(y.shape, [2, 3, 2, 4]);
    t.is(tapeLength(), 0);
  });
});

test('bad arguments give typed errors naming the op and the argument', (t) => {
  const be = cpu();
  const live = liveTensors();
  try {
    scope(() => {
      const z = (shape: number[], dtype: 'f32' | 'i32' = 'f32') => {
        const n = shape.reduce((a, b) => a * b, 1);
        return tensor(dtype === 'i32' ? new Int32Array(n) : new Float32Array(n), shape);
      };
      const qkv = z([2, 5, 2, 3, 4]);
      t.throws(() => attentionQkv(z([2, 5, 2, 12])), { instanceOf: ShapeError, message: /attentionQkv.*\[B, T, H, 3, D\]/ });
      t.throws(() => attentionQkv(z([2, 5, 2, 2, 4])), { instanceOf: ShapeError, message: /attentionQkv.*f32\[2,5,2,2,4\]/ });
      // the native checks themselves (what a caller of the native surface gets)
      t.throws(() => be.attentionQkvForward(z([2, 5, 2, 2, 4]).handle, null, false, 0.5, 0, 0),
        { instanceOf: ShapeError, message: /attentionQkvForward: qkv must be \[B, T, H, 3, D\]/ });
      t.throws(() => be.attentionQkvForward(z([2, 5, 8]).handle, null, false, 0.5, 0, 0),
        { instanceOf: ShapeError, message: /attentionQkvForward.*qkv/ });
      t.throws(() => be.attentionQkvForward(z([2, 5, 2, 3, 0]).handle, null, false, 0.5, 0, 0),
        { instanceOf: ShapeError, message: /head dimension/ });
      t.throws(() => attentionQkv(qkv, { keyMask: z([2, 4], 'i32') }),
        { instanceOf: ShapeError, message: /attentionQkvForward.*keyMask must be \[B, T\] = \[2,5\]/ });
      t.throws(() => attentionQkv(qkv, { keyMask: z([2, 5]) }), { instanceOf: DTypeError, message: /keyMask/ });
      t.throws(() => attentionQkv(z([2, 5, 2, 3, 4], 'i32')), { instanceOf: DTypeError, message: /qkv/ });
      t.throws(() => attentionQkv(qkv, { dropoutP: 1, seed: 1 }), { instanceOf: ArgumentError, message: /dropoutP/ });
      t.throws(() => attentionQkv(qkv, { dropoutP: 0.1 }), { instanceOf: ArgumentError, message: /attentionQkv.*seed/ });
      t.throws(() => attentionQkv(qkv, { scale: NaN }), { instanceOf: ArgumentError, message: /scale/ });
      // the backward's operands
      const [o, lse] = be.attentionQkvForward(qkv.handle, null, false, 0.5, 0, 0);
      const go = z([2, 5, 2, 4]);
      try {
        t.throws(() => be.attentionQkvBackward(qkv.handle, z([2, 5, 2, 3]).handle, lse, go.handle, null, false, 0.5, 0, 0),
          { instanceOf: ShapeError, message: /attentionQkvBackward: out must be \[B, T, H, D\] = \[2,5,2,4\]/ });
        t.throws(() => be.attentionQkvBackward(qkv.handle, o, lse, z([2, 5, 2, 5]).handle, null, false, 0.5, 0, 0),
          { instanceOf: ShapeError, message: /gout must be/ });
        t.throws(() => be.attentionQkvBackward(qkv.handle, o, z([2, 5, 2]).handle, go.handle, null, false, 0.5, 0, 0),
          { instanceOf: ShapeError, message: /lse must be \[B, H, T\] = \[2,2,5\]/ });
        t.throws(() => be.attentionQkvBackward(qkv.handle, o, z([2, 2, 5], 'i32').handle, go.handle, null, false, 0.5, 0, 0),
          { instanceOf: DTypeError, message: /lse/ });
        const g = be.attentionQkvBackward(qkv.handle, o, lse, go.handle, null, false, 0.5, 0, 0);
        t.deepEqual(g.shape, [2, 5, 2, 3, 4]);
        g.dispose();
      } finally {
        o.dispose();
        lse.dispose();
      }
    });
  } finally {
    clearTape();
  }
  t.is(liveTensors(), live);
});
