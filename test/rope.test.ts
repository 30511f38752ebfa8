import test from 'ava';
import { rope, tensor, scope, ShapeError, ArgumentError } from '../lib/tensor/index.ts';
import { checkOp } from './helpers/gradcheck.ts';
import { TOL, relMaxError } from './helpers/tolerances.ts';
import { ropeAngle } from './helpers/reference.ts';

// HF's LlamaRotaryEmbedding (what the official code runs): inv = 1 / theta^(arange(0, D, 2) / D) and angle = pos · inv
// in fp32 (ropeAngle), cos/sin of that rounded to fp32; y = x·cos + cat(-b, a)·sin with cos/sin over cat(fr, fr).
function refRope(x: Float64Array, [B, T, H, D]: number[], pos0: number, theta: number): Float64Array {
  const half = D / 2, y = new Float64Array(x.length);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const angle = ropeAngle(pos0 + t, i, D, theta);
          const c = Math.fround(Math.cos(angle)), s = Math.fround(Math.sin(angle));
          const a = x[o + i], z = x[o + i + half];
          y[o + i] = a * c - z * s;
          y[o + i + half] = z * c + a * s;
        }
      }
  return y;
}

for (const [shape, pos0, theta] of [
  [[3, 5, 3, 6], 7, 10000],
  [[1, 3, 5, 10], 0, 10000],
  [[2, 7, 1, 4], 123, 500000],
] as [number[], number, number][]) {
  test(`rope [${shape}] pos0=${pos0} theta=${theta} matches the reference formula, forward and backward`, (t) =>
    checkOp(t, {
      inputs: [{ shape }],
      forward: ([x]) => rope(x, pos0, theta),
      reference: ([x]) => refRope(x, shape, pos0, theta),
      forwardTol: TOL.rope,
    }));
}

test('rope tables grow with the positions asked for, and far-out positions bypass the cache', (t) => {
  const shape = [1, 3, 2, 6];
  const x = Float32Array.from({ length: 36 }, (_, i) => Math.sin(i + 1));
  scope(() => {
    for (const pos0 of [0, 61, 200, 1000, 3_000_000]) {
      const got = rope(tensor(x, shape), pos0).toFloat32();
      const want = refRope(Float64Array.from(x), shape, pos0, 10000);
      t.true(relMaxError(got, want, TOL.rope.floor) < TOL.rope.rel, `pos0 = ${pos0}`);
    }
  });
});

test('rope equals values produced by PyTorch running the reference code', (t) => {
  // torch 2.x, fp32: x[i] = ((i*37) % 23 - 11) / 7 as [1, 3, 2, 6], positions 5..7, theta 10000 (see the reference's
  // LLaMA forward: cos/sin computed in float64, cast to float32, rotate-half).
  const torchOut = [0.6501586437225342, 0.44993892312049866, -0.8417046070098877, 1.831066370010376,
    -0.040455013513565063, -1.4377217292785645, 0.1620926856994629, -0.3994193971157074, 1.2779455184936523,
    -0.5479567646980286, -1.4155315160751343, 0.7280939817428589, -0.8680007457733154, 1.1378923654556274,
    0.14838503301143646, -0.9376714825630188, 1.2168447971343994, -0.4266889989376068, 1.7882544994354248,
    0.35325127840042114, -0.9796037673950195, 0.5210888385772705, -0.19616025686264038, -1.5842233896255493,
    0.41695621609687805, -0.35626110434532166, 1.1341098546981812, 0.17386537790298462, -1.627448320388794,
    0.5885984301567078, 0.3061954379081726, 0.9904268383979797, 0.00861741229891777, -1.4385790824890137,
    1.0873453617095947, -0.571363627910614];
  const x = Float32Array.from({ length: 36 }, (_, i) => (((i * 37) % 23) - 11) / 7);
  scope(() => {
    const got = rope(tensor(x, [1, 3, 2, 6]), 5).toFloat32();
    t.true(relMaxError(got, torchOut, TOL.rope.floor) < TOL.rope.rel, `${Array.from(got)}`);
  });
});

test('rope rejects odd head dims, wrong ranks and negative positions', (t) => {
  scope(() => {
    const e = t.throws(() => rope(tensor(new Float32Array(2 * 3 * 5), [1, 2, 3, 5])), { instanceOf: ShapeError });
    t.regex(e!.message, /ropeForward: .*even.*f32\[1,2,3,5\]/);
    t.throws(() => rope(tensor(new Float32Array(24), [2, 3, 4])), { instanceOf: ShapeError });
    t.throws(() => rope(tensor(new Float32Array(24), [1, 2, 3, 4]), -1), { instanceOf: ArgumentError });
    t.throws(() => rope(tensor(new Float32Array(24), [1, 2, 3, 4]), 0, 0), { instanceOf: ArgumentError });
  });
});
