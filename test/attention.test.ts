import test from 'ava';
import {
  attention, tensor, scope, backward, liveTensors, ShapeError, DTypeError, ArgumentError, type Tensor,
} from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { dropoutFactors } from './helpers/dropout_hash.ts';
import { randn, rng } from './helpers/rng.ts';
import { relMaxError, TOL } from './helpers/tolerances.ts';

interface Case {
  B: number; Tq: number; Tk: number; H: number; D: number;
  causal?: boolean; scale?: number;
  mask?: number[];  // [B, Tk], nonzero = attend
  dropoutP?: number; seed?: number;
}

// Dropout factors of every P[b, h, i, j] (dense [B, H, Tq, Tk] numbering), from the TS port of the kernels' hash.
const factorsOf = (c: Case): Float64Array | null =>
  c.dropoutP ? dropoutFactors(c.seed!, c.dropoutP, c.B * c.H * c.Tq * c.Tk) : null;

// Probabilities of one query row (materialised softmax, float64); null when the row sees no key.
function probs(q: ArrayLike<number>, k: ArrayLike<number>, c: Case, mask: ArrayLike<number> | undefined, b: number,
  h: number, i: number): Float64Array | null {
  const { Tq, Tk, H, D } = c, scale = c.scale ?? 1 / Math.sqrt(D);
  const s = new Float64Array(Tk).fill(-Infinity);
  let m = -Infinity;
  for (let j = 0; j < Tk; j++) {
    if (c.causal && j > i + Tk - Tq) continue;
    if (mask && !mask[b * Tk + j]) continue;
    let acc = 0;
    for (let d = 0; d < D; d++) acc += q[((b * Tq + i) * H + h) * D + d] * k[((b * Tk + j) * H + h) * D + d];
    s[j] = scale * acc;
    m = Math.max(m, s[j]);
  }
  if (m === -Infinity) return null;
  let sum = 0;
  for (let j = 0; j < Tk; j++) sum += (s[j] = Math.exp(s[j] - m));
  for (let j = 0; j < Tk; j++) s[j] /= sum;
  return s;
}

function refForward(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, c: Case,
  mask: ArrayLike<number> | undefined, f: Float64Array | null): Float64Array {
  const { B, Tq, Tk, H, D } = c;
  const out = new Float64Array(B * Tq * H * D);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Tq; i++) {
        const p = probs(q, k, c, mask, b, h, i);
        if (!p) continue;
        const fo = ((b * H + h) * Tq + i) * Tk;
        for (let j = 0; j < Tk; j++) {
          const w = p[j] * (f ? f[fo + j] : 1);
          if (w === 0) continue;
          for (let d = 0; d < D; d++) out[((b * Tq + i) * H + h) * D + d] += w * v[((b * Tk + j) * H + h) * D + d];
        }
      }
  return out;
}

function check(t: import('ava').ExecutionContext, c: Case, grads = [true, true, true]): void {
  const f = factorsOf(c);
  checkOp(t, {
    inputs: [
      { shape: [c.B, c.Tq, c.H, c.D], grad: grads[0] }, { shape: [c.B, c.Tk, c.H, c.D], grad: grads[1] },
      { shape: [c.B, c.Tk, c.H, c.D], grad: grads[2] },
      ...(c.mask ? [{ shape: [c.B, c.Tk], dtype: 'i32' as const, values: c.mask }] : []),
    ],
    forward: ([q, k, v, m]) =>
      attention(q, k, v, { causal: c.causal, scale: c.scale, keyMask: m ?? null, dropoutP: c.dropoutP, seed: c.seed }),
    reference: ([q, k, v, m]) => refForward(q, k, v, c, m, f),
  });
}

test('full attention, odd sizes (B2 H3 T7 D5)', (t) => check(t, { B: 2, Tq: 7, Tk: 7, H: 3, D: 5 }));
test('causal attention, Tq == Tk', (t) => check(t, { B: 2, Tq: 7, Tk: 7, H: 3, D: 5, causal: true }));
test('causal attention, Tq < Tk aligns the last query with the last key', (t) =>
  check(t, { B: 2, Tq: 5, Tk: 9, H: 2, D: 3, causal: true }));
test('causal attention, Tq > Tk: early queries see no key and get zeros', (t) =>
  check(t, { B: 1, Tq: 9, Tk: 5, H: 2, D: 4, causal: true }));
test('cross-length attention (Tq 5 over Tk 11) with an arbitrary scale', (t) =>
  check(t, { B: 2, Tq: 5, Tk: 11, H: 2, D: 3, scale: 0.77 }));
test('key padding mask, including a batch whose every key is masked', (t) =>
  check(t, { B: 3, Tq: 4, Tk: 6, H: 2, D: 3, mask: [1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1] }));
test('causal with a key mask that hides every key of the first queries', (t) =>
  check(t, { B: 2, Tq: 6, Tk: 6, H: 1, D: 4, causal: true, mask: [0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0] }));
test('several query blocks (T 70), causal, one head (split backward)', (t) =>
  check(t, { B: 1, Tq: 70, Tk: 70, H: 1, D: 3, causal: true }));
test('several query blocks, full, Tq 67 over Tk 73 with a mask', (t) =>
  check(t, { B: 1, Tq: 67, Tk: 73, H: 1, D: 2, mask: Array.from({ length: 73 }, (_, j) => (j % 5 === 3 ? 0 : 1)) }));
test('frozen k and v: only q gets a gradient', (t) =>
  check(t, { B: 2, Tq: 3, Tk: 5, H: 2, D: 3 }, [true, false, false]));
test('dropout gradient against a reference with the same hash mask', (t) =>
  check(t, { B: 2, Tq: 6, Tk: 8, H: 2, D: 3, causal: true, dropoutP: 0.3, seed: 12345 }));
test('dropout with a key mask, cross-length', (t) =>
  check(t, { B: 2, Tq: 4, Tk: 9, H: 2, D: 3, dropoutP: 0.45, seed: 2 ** 40 + 7,
    mask: [1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0] }));

// Analytic float64 gradients (materialised P) for a size too big for finite differences: B·H < threads and several
// query blocks, so the backward's split-and-reduce path, the causal block skipping and dropout all run together.
test('forward and analytic backward at Tq 150, Tk 161 (causal, mask, dropout)', (t) => {
  const c: Case = { B: 1, Tq: 150, Tk: 161, H: 1, D: 8, causal: true, dropoutP: 0.2, seed: 99,
    mask: Array.from({ length: 161 }, (_, j) => (j % 7 === 0 ? 0 : 1)) };
  const { Tq, Tk, D } = c, scale = 1 / Math.sqrt(D);
  const r = rng(7);
  const [q, k, v, go] = [Tq * D, Tk * D, Tk * D, Tq * D].map((n) => Float64Array.from(Float32Array.from(randn(r, n))));
  const f = factorsOf(c)!;
  const out = refForward(q, k, v, c, c.mask, f);
  const gq = new Float64Array(Tq * D), gk = new Float64Array(Tk * D), gv = new Float64Array(Tk * D);
  for (let i = 0; i < Tq; i++) {
    const p = probs(q, k, c, c.mask, 0, 0, i);
    if (!p) continue;
    const dP = new Float64Array(Tk);
    let delta = 0;
    for (let j = 0; j < Tk; j++) {
      for (let d = 0; d < D; d++) dP[j] += go[i * D + d] * v[j * D + d];
      delta += p[j] * f[i * Tk + j] * dP[j];
    }
    for (let j = 0; j < Tk; j++) {
      const ds = p[j] * (f[i * Tk + j] * dP[j] - delta);
      for (let d = 0; d < D; d++) {
        gq[i * D + d] += scale * ds * k[j * D + d];
        gk[j * D + d] += scale * ds * q[i * D + d];
        gv[j * D + d] += p[j] * f[i * Tk + j] * go[i * D + d];
      }
    }
  }
  scope(() => {
    const mk = (x: Float64Array, T: number) => tensor(Float32Array.from(x), [1, T, 1, D], { requiresGrad: true });
    const [tq, tk, tv] = [mk(q, Tq), mk(k, Tk), mk(v, Tk)];
    const y = attention(tq, tk, tv, { causal: true, keyMask: tensor(Int32Array.from(c.mask!), [1, Tk]), dropoutP: 0.2, seed: 99 });
    t.true(relMaxError(y.toFloat32(), out, TOL.f32Forward.floor) < TOL.f32Forward.rel, 'forward');
    backward(y, tensor(Float32Array.from(go), [1, Tq, 1, D]));
    for (const [name, x, want] of [['q', tq, gq], ['k', tk, gk], ['v', tv, gv]] as const) {
      const e = relMaxError(x.grad!.toFloat32(), want, TOL.f32Grad.floor);
      t.true(e < TOL.f32Grad.rel, `grad ${name}: ${e.toExponential(2)}`);
    }
    for (const x of [tq, tk, tv]) x.grad?.dispose();
  });
});

test('a fully masked query row gives exact zeros, never NaN, in output and gradients', (t) => {
  scope(() => {
    const r = rng(3);
    const mk = (shape: number[]) => tensor(Float32Array.from(randn(r, shape.reduce((a, b) => a * b))), shape, { requiresGrad: true });
    const q = mk([2, 3, 2, 4]), k = mk([2, 5, 2, 4]), v = mk([2, 5, 2, 4]);
    const keyMask = tensor(Int32Array.from([1, 1, 1, 0, 1, 0, 0, 0, 0, 0]), [2, 5]);
    const y = attention(q, k, v, { keyMask });
    const yv = y.toFloat32();
    t.deepEqual(Array.from(yv.subarray(24)), new Array(24).fill(0));
    backward(y, tensor(new Float32Array(48).fill(1), [2, 3, 2, 4]));
    for (const x of [q, k, v]) {
      const g = x.grad!.toFloat32();
      t.true(g.every(Number.isFinite));
      t.true(g.subarray(g.length / 2).every((z) => z === 0));
    }
    for (const x of [q, k, v]) x.grad?.dispose();
  });
});

test('dropout: the same seed gives the same output, another seed another, p = 0 none', (t) => {
  const live = liveTensors();
  scope(() => {
    const r = rng(5);
    const mk = (shape: number[]) => tensor(Float32Array.from(randn(r, shape.reduce((a, b) => a * b))), shape);
    const q = mk([2, 33, 2, 8]), k = mk([2, 33, 2, 8]), v = mk([2, 33, 2, 8]);
    const run = (p: number, seed?: number) => attention(q, k, v, { causal: true, dropoutP: p, seed }).toFloat32();
    const a = run(0.25, 11), b = run(0.25, 11), c = run(0.25, 12), none = run(0), zeroP = run(0, 11);
    t.deepEqual(a, b);
    t.notDeepEqual(a, c);
    t.notDeepEqual(a, none);
    t.deepEqual(none, zeroP);
  });
  t.is(liveTensors(), live);
});

test('bad arguments give typed errors naming the op and the shapes', (t) => {
  scope(() => {
    const z = (shape: number[], dtype: 'f32' | 'i32' = 'f32') =>
      tensor(dtype === 'i32' ? new Int32Array(shape.reduce((a, b) => a * b)) : new Float32Array(shape.reduce((a, b) => a * b)), shape);
    const q = z([2, 3, 2, 4]), k = z([2, 5, 2, 4]), v = z([2, 5, 2, 4]);
    let e = t.throws(() => attention(q, z([2, 5, 2, 3]), z([2, 5, 2, 3])), { instanceOf: ShapeError });
    t.regex(e!.message, /attentionForward.*head dimensions.*f32\[2,3,2,4\].*f32\[2,5,2,3\]/);
    e = t.throws(() => attention(q, k, z([2, 4, 2, 4])), { instanceOf: ShapeError });
    t.regex(e!.message, /attentionForward.*k and v/);
    e = t.throws(() => attention(q, z([3, 5, 2, 4]), z([3, 5, 2, 4])), { instanceOf: ShapeError });
    t.regex(e!.message, /batch/);
    t.throws(() => attention(q, z([2, 5, 3, 4]), z([2, 5, 3, 4])), { instanceOf: ShapeError, message: /head counts/ });
    t.throws(() => attention(z([2, 3, 8]), k, v), { instanceOf: ShapeError });
    e = t.throws(() => attention(q, k, v, { keyMask: z([2, 4], 'i32') }), { instanceOf: ShapeError });
    t.regex(e!.message, /keyMask must be \[B, Tk\] = \[2,5\]/);
    t.throws(() => attention(q, k, v, { keyMask: z([2, 5]) }), { instanceOf: DTypeError, message: /keyMask/ });
    t.throws(() => attention(q, k, v, { dropoutP: 1, seed: 1 }), { instanceOf: ArgumentError, message: /dropoutP/ });
    t.throws(() => attention(q, k, v, { dropoutP: 0.1 }), { instanceOf: ArgumentError, message: /seed/ });
    t.throws(() => attention(tensor(new Int32Array(48), [2, 3, 2, 4]), k, v), { instanceOf: DTypeError });
  });
});

export type { Tensor };
