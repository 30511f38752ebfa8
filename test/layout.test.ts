import test from 'ava';
import { backward, cast, castMany, concat, mul, slice, split, gatherRows, spliceRows, reshape, patchify, tapeLength, tensor, scope } from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';

test('concat along the sequence axis', (t) =>
  checkOp(t, {
    inputs: [{ shape: [2, 3, 4] }, { shape: [2, 5, 4] }],
    forward: ([a, b]) => concat([a, b], 1),
    reference: ([a, b]) => {
      const out = new Float64Array(2 * 8 * 4);
      for (let i = 0; i < 2; i++) {
        out.set(a.subarray(i * 12, i * 12 + 12), i * 32);
        out.set(b.subarray(i * 20, i * 20 + 20), i * 32 + 12);
      }
      return out;
    },
  }));

test('slice along the sequence axis', (t) =>
  checkOp(t, {
    inputs: [{ shape: [2, 7, 3] }],
    forward: ([a]) => slice(a, 1, 2, 4),
    reference: ([a]) => {
      const out = new Float64Array(2 * 4 * 3);
      for (let i = 0; i < 2; i++) out.set(a.subarray(i * 21 + 6, i * 21 + 18), i * 12);
      return out;
    },
  }));

test('gatherRows (embedding) with repeated ids accumulates gradients', (t) => {
  const ids = [3, 0, 3, 5, 1];
  checkOp(t, {
    inputs: [{ shape: [7, 4] }, { shape: [5], dtype: 'i32', values: ids }],
    forward: ([w, i]) => gatherRows(w, i),
    reference: ([w]) => {
      const out = new Float64Array(ids.length * 4);
      ids.forEach((id, r) => out.set(w.subarray(id * 4, id * 4 + 4), r * 4));
      return out;
    },
  });
});

test('spliceRows replaces rows and routes gradients to both sides', (t) => {
  const rows = [1, 4];
  checkOp(t, {
    inputs: [{ shape: [6, 3] }, { shape: [2], dtype: 'i32', values: rows }, { shape: [2, 3] }],
    forward: ([b, i, s]) => spliceRows(b, i, s),
    reference: ([b, , s]) => {
      const out = Float64Array.from(b);
      rows.forEach((r, j) => out.set(s.subarray(j * 3, j * 3 + 3), r * 3));
      return out;
    },
  });
});

test('reshape is a view whose gradient is reshaped back', (t) =>
  checkOp(t, { inputs: [{ shape: [2, 6] }], forward: ([a]) => reshape(a, [3, -1]), reference: ([a]) => Float64Array.from(a) }));

test('patchify lays out patches row-major with channel-major features (conv as GEMM)', (t) => {
  scope(() => {
    const N = 1, C = 2, H = 4, W = 6, p = 2;
    const img = Float32Array.from({ length: N * C * H * W }, (_, i) => i);
    const out = patchify(tensor(img, [N, C, H, W]), p);
    t.deepEqual([...out.shape], [1, 6, 8]);
    const d = out.data<'f32'>();
    // patch (gy=1, gx=2) -> index 5; feature (c=1, y=1, x=0) -> 1*4 + 1*2 + 0 = 6
    t.is(d[5 * 8 + 6], img[(1 * H + (1 * p + 1)) * W + 2 * p + 0]);
  });
});

test('castMany casts each tensor as cast does; its one tape entry returns each gradient in its input dtype, none for an unused output', (t) => {
  scope(() => {
    const a = tensor(Float32Array.from([1.1, -2.3, 3.7e-3, 65519.5]), [2, 2], { requiresGrad: true });
    const b = tensor(Float32Array.from([5, 6.01]), [2], { requiresGrad: true });
    const c = tensor(Float32Array.from([0.5, -1, 2, 3]), [2, 2], { requiresGrad: true });
    const before = tapeLength();
    const [ah, bh, ch] = castMany([a, b, c], 'bf16');
    t.is(tapeLength(), before + 1);
    t.deepEqual([ah.dtype, bh.dtype, ch.dtype], ['bf16', 'bf16', 'bf16']);
    t.deepEqual(ah.shape, [2, 2]);
    for (const [x, xh] of [[a, ah], [b, bh]] as const) t.deepEqual(Array.from(xh.toFloat32()), Array.from(cast(x, 'bf16').toFloat32()));
    // Gradients: a through a product with c's copy, b unused; the bf16 gradients come back as f32.
    const y = mul(cast(ah, 'f32'), cast(ch, 'f32'));
    backward(y);
    t.is(a.grad!.dtype, 'f32');
    t.deepEqual(Array.from(a.grad!.toFloat32()), [0.5, -1, 2, 3]);
    t.deepEqual(Array.from(c.grad!.toFloat32()), Array.from(cast(cast(a, 'bf16'), 'f32').toFloat32()));
    t.is(b.grad, null);
  });
  t.deepEqual(castMany([], 'bf16'), []);
});

test('split cuts an axis into pieces; its gradient is one concat with zeros for an unused piece', (t) => {
  // [2, 7, 3] split along axis 1 into 2 | 3 | 2; the middle piece is unused, the others are swapped by a concat.
  checkOp(t, {
    inputs: [{ shape: [2, 7, 3] }],
    forward: ([a]) => { const [p, , r] = split(a, 1, [2, 3, 2]); return concat([r, p], 1); },
    reference: ([a]) => {
      const out = new Float64Array(2 * 4 * 3);
      for (let i = 0; i < 2; i++) {
        out.set(a.subarray(i * 21 + 15, i * 21 + 21), i * 12);
        out.set(a.subarray(i * 21, i * 21 + 6), i * 12 + 6);
      }
      return out;
    },
  });
  scope(() => {
    const x = tensor(new Float32Array(6), [2, 3]);
    t.throws(() => split(x, 1, [1, 1]), { message: /do not cover axis 1/ });
  });
});

// The ViT frees its q|k|v activation once split (the pieces hold their own copies), so these backward closures
// must not touch their input again: reading its device there threw on CUDA only (2026-11-27), and now throws on
// every backend, which this test would catch.
test('slice, split, gatherRows and spliceRows differentiate after their input is disposed', (t) => {
  scope(() => {
    const w = tensor(Float32Array.from({ length: 24 }, (_, i) => i / 10), [6, 4], { requiresGrad: true });
    const x = mul(w, w); // an activation: on the tape, freed by its owner before the backward
    const [a, , c] = split(x, 0, [2, 1, 3]);
    const s = slice(x, 1, 1, 2);
    const ids = tensor(new Int32Array([4, 1]), [2], { dtype: 'i32' });
    const g = gatherRows(x, ids);
    const base = mul(w, w), spliced = spliceRows(base, tensor(new Int32Array([0]), [1], { dtype: 'i32' }), slice(x, 0, 5, 1));
    x.dispose();
    base.dispose();
    const loss = reshape(concat([reshape(a, [8]), reshape(c, [12]), reshape(s, [12]), reshape(g, [8]), reshape(spliced, [24])], 0), [1, 64]);
    backward(loss, tensor(new Float32Array(64).fill(1), [1, 64]));
    const gw = w.grad!.toFloat32();
    // d/dw of w² summed over: a (rows 0–1), c (rows 3–5), s (columns 1–2), g (rows 4, 1), spliced (w² with row 0
    // replaced by x's row 5): 2w times how often each element is used.
    const uses = (r: number, col: number) => (r < 2 || r >= 3 ? 1 : 0) + (col === 1 || col === 2 ? 1 : 0) + (r === 4 || r === 1 ? 1 : 0) + (r === 0 ? 0 : 1) + (r === 5 ? 1 : 0);
    for (let r = 0; r < 6; r++) for (let col = 0; col < 4; col++)
      t.true(Math.abs(gw[r * 4 + col] - 2 * (r * 4 + col) / 10 * uses(r, col)) < 1e-5, `w[${r},${col}]`);
  });
});
