import test from 'ava';
import {
  quickGelu, silu, swiglu, softmax, dropout, tensor, full, scope, backward, ShapeError, ArgumentError, DTypeError,
} from '../lib/tensor/index.ts';
import { cpu } from '../lib/native.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { randn, rng } from './helpers/rng.ts';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const map = (a: Float64Array, f: (x: number, i: number) => number) => a.map(f);

// Normal values plus a few far in the tails, where sigmoid saturates.
const withTails = (n: number, seed: number) => {
  const v = randn(rng(seed), n, 3);
  [-100, -30, -9, 9, 30, 100].forEach((x, i) => (v[i * 5] = x));
  return v;
};

test('quickGelu = x·sigmoid(1.702x)', (t) =>
  checkOp(t, {
    inputs: [{ shape: [7, 13], values: withTails(91, 1) }],
    forward: ([x]) => quickGelu(x),
    reference: ([x]) => map(x, (v) => v * sigmoid(1.702 * v)),
  }));

test('silu = x·sigmoid(x)', (t) =>
  checkOp(t, {
    inputs: [{ shape: [7, 13], values: withTails(91, 2) }],
    forward: ([x]) => silu(x),
    reference: ([x]) => map(x, (v) => v * sigmoid(v)),
  }));

test('swiglu = silu(gate)·up', (t) =>
  checkOp(t, {
    inputs: [{ shape: [5, 11], std: 2 }, { shape: [5, 11] }],
    forward: ([g, u]) => swiglu(g, u),
    reference: ([g, u]) => map(g, (v, i) => v * sigmoid(v) * u[i]),
  }));

for (const frozen of [0, 1]) {
  test(`swiglu with ${frozen === 0 ? 'gate' : 'up'} frozen computes only the other gradient`, (t) => {
    checkOp(t, {
      inputs: [{ shape: [3, 7], grad: frozen !== 0 }, { shape: [3, 7], grad: frozen !== 1 }],
      forward: ([g, u]) => swiglu(g, u),
      reference: ([g, u]) => map(g, (v, i) => v * sigmoid(v) * u[i]),
    });
    const be = cpu();
    const g = be.full('f32', [4], 0.5), u = be.full('f32', [4], 2), gy = be.full('f32', [4], 1);
    const [gg, gu] = be.swigluBackward(gy, g, u, frozen !== 0, frozen !== 1);
    t.is(frozen === 0 ? gg : gu, null);
    t.truthy(frozen === 0 ? gu : gg);
    for (const h of [g, u, gy, gg, gu]) h?.dispose();
  });
}

function refSoftmax(x: Float64Array, cols: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const m = Math.max(...row);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(row[j] - m);
    for (let j = 0; j < cols; j++) y[r * cols + j] = Math.exp(row[j] - m) / s;
  }
  return y;
}

test('softmax over the last axis', (t) =>
  checkOp(t, {
    inputs: [{ shape: [7, 13], std: 2 }],
    forward: ([x]) => softmax(x),
    reference: ([x]) => refSoftmax(x, 13),
  }));

test('softmax is stable under large offsets (+-1000, +1e4)', (t) => {
  const offsets = [1000, -1000, 0, 10000, 1000, -500, 3];
  const x = randn(rng(5), 7 * 13).map((v, i) => v + offsets[Math.floor(i / 13)]);
  checkOp(t, {
    inputs: [{ shape: [7, 13], values: x }],
    forward: ([xt]) => {
      const y = softmax(xt);
      t.true(y.toFloat32().every(Number.isFinite));
      return y;
    },
    reference: ([xr]) => refSoftmax(xr, 13),
  });
});

test('softmax: masked (-inf) entries get 0, a fully masked row gives zeros, not NaN', (t) => {
  scope(() => {
    const inf = Number.NEGATIVE_INFINITY;
    const y = softmax(tensor([0, inf, 0, inf, inf, inf, inf, inf], [2, 4])).toArray();
    t.deepEqual(y, [0.5, 0, 0.5, 0, 0, 0, 0, 0]);
  });
});

// The documented dropout hash (native/src/core/rng_hash.h), in BigInt: SplitMix64 at a random-access position.
const M64 = (1n << 64n) - 1n;
function mix64(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}
function refMask(seed: number, n: number, p: number): boolean[] {
  const key = mix64(BigInt(seed)), threshold = BigInt(Math.floor(Math.fround(p) * 2 ** 32));
  return Array.from({ length: n }, (_, i) => mix64((key + BigInt(i + 1) * 0x9e3779b97f4a7c15n) & M64) >> 32n >= threshold);
}

test('dropout follows the documented counter-based hash, forward and backward', (t) => {
  const p = 0.3, seed = 2 ** 53 - 12345, shape = [7, 13];
  const mask = refMask(seed, 91, p);
  t.true(mask.some((k) => !k) && mask.some((k) => k));
  checkOp(t, {
    inputs: [{ shape }],
    forward: ([x]) => dropout(x, p, seed),
    reference: ([x]) => map(x, (v, i) => (mask[i] ? v / (1 - Math.fround(p)) : 0)),
  });
});

test('dropout masks: same seed same mask, other seed other mask, kept fraction ~ 1-p, backward reuses the mask', (t) => {
  scope(() => {
    const n = 1 << 20, p = 0.1;
    const x = full([n], 1);
    const a = dropout(x, p, 42).toFloat32(), b = dropout(x, p, 42).toFloat32(), c = dropout(x, p, 43).toFloat32();
    t.deepEqual(a, b);
    const scale = Math.fround(1 / Math.fround(1 - p));
    let kept = 0, differ = 0;
    for (let i = 0; i < n; i++) {
      if (a[i] !== 0) { kept++; if (a[i] !== scale) { t.fail(`kept value ${a[i]} != ${scale}`); break; } }
      if ((a[i] === 0) !== (c[i] === 0)) differ++;
    }
    // Binomial: sd of the kept fraction is sqrt(p(1-p)/n) = 3e-4; allow 5 sd.
    t.true(Math.abs(kept / n - (1 - p)) < 1.5e-3, `kept fraction ${kept / n}`);
    // Independent masks disagree on 2p(1-p) = 18% of elements.
    t.true(Math.abs(differ / n - 2 * p * (1 - p)) < 3e-3, `masks of seeds 42, 43 differ on ${differ / n}`);

    const xs = tensor(Float32Array.from(randn(rng(9), 4097)), [4097], { requiresGrad: true });
    const y = dropout(xs, 0.5, 7);
    backward(y, full([4097], 1));
    const yv = y.toFloat32(), gv = xs.grad!.toFloat32();
    for (let i = 0; i < yv.length; i++) if ((yv[i] !== 0) !== (gv[i] !== 0)) { t.fail(`mask differs at ${i}`); break; }
    t.true(gv.every((g) => g === 0 || g === 2));
    xs.grad!.dispose();
  });
});

test('dropout with p = 0 is the identity and passes gradients through', (t) =>
  checkOp(t, { inputs: [{ shape: [3, 5] }], forward: ([x]) => dropout(x, 0, 1), reference: ([x]) => x.slice() }));

test('activation ops reject bad arguments with typed errors', (t) => {
  scope(() => {
    const x = tensor(new Float32Array(6), [2, 3]), y = tensor(new Float32Array(6), [3, 2]);
    const e = t.throws(() => swiglu(x, y), { instanceOf: ShapeError });
    t.regex(e!.message, /swigluForward: gate and up must have the same shape.*\[2,3\].*\[3,2\]/);
    t.throws(() => dropout(x, 1, 0), { instanceOf: ArgumentError });
    t.throws(() => dropout(x, -0.1, 0), { instanceOf: ArgumentError });
    t.throws(() => dropout(x, 0.5, -1), { instanceOf: ArgumentError });
    t.throws(() => dropout(x, 0.5, 1.5), { instanceOf: ArgumentError });
    t.throws(() => silu(tensor(new Int32Array(3), [3])), { instanceOf: DTypeError });
    const be = cpu();
    t.throws(() => be.softmaxBackward(x.handle, y.handle), { instanceOf: ShapeError });
    t.throws(() => be.quickGeluBackward(x.handle, y.handle), { instanceOf: ShapeError });
  });
});
