// The one helper every op test uses: runs an owlet op forward and backward in fp32 and compares both against a
// float64 reference implementation of the same maths; reference gradients come from central finite differences of
// that float64 reference, so the check needs no hand-derived gradient.
import type { ExecutionContext } from 'ava';
import { Tensor, tensor, backward, scope, liveTensors, clearTape } from '../../lib/tensor/index.ts';
import { TOL, relMaxError, type Tol } from './tolerances.ts';
import { randn, rng } from './rng.ts';

export interface InputSpec {
  shape: number[];
  /** Values (float64); random normal when absent. */
  values?: Float64Array | number[];
  /** i32 inputs are data (ids, masks): no gradient. */
  dtype?: 'f32' | 'i32';
  grad?: boolean;
  std?: number;
}

export interface CheckOptions {
  inputs: InputSpec[];
  forward: (ts: Tensor[]) => Tensor;
  /** float64 reference of forward, on the same values (flat arrays in the same order). */
  reference: (xs: Float64Array[]) => Float64Array;
  seed?: number;
  forwardTol?: Tol;
  gradTol?: Tol;
  h?: number;
}

export function checkOp(t: ExecutionContext, o: CheckOptions): void {
  const r = rng(o.seed ?? 1234);
  const values = o.inputs.map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.values) return Float64Array.from(s.values);
    return randn(r, n, s.std ?? 1);
  });
  // Feed the fp32-rounded values to the reference so that input rounding is not counted as error.
  const rounded = values.map((v, i) => (o.inputs[i].dtype === 'i32' ? v : Float64Array.from(Float32Array.from(v))));
  const live = liveTensors();
  try {
    run();
  } finally {
    // A failed assertion throws out of the scope; drop the tape so the next test starts clean.
    clearTape();
  }
  t.is(liveTensors(), live, 'the op leaked tensors');

  function run(): void {
  scope(() => {
    const ts = o.inputs.map((s, i) =>
      s.dtype === 'i32'
        ? tensor(Int32Array.from(values[i]), s.shape)
        : tensor(Float32Array.from(values[i]), s.shape, { requiresGrad: s.grad !== false }),
    );
    const y = o.forward(ts);
    const want = o.reference(rounded);
    const got = y.toFloat32();
    const ft = o.forwardTol ?? TOL.f32Forward;
    const fe = relMaxError(got, want, ft.floor);
    t.true(fe < ft.rel, `forward relative max error ${fe.toExponential(2)} >= ${ft.rel} (${ft.why})`);

    const w = randn(r, want.length);
    const wT = tensor(Float32Array.from(w), [...y.shape]);
    const wR = Float64Array.from(Float32Array.from(w));
    backward(y, wT);
    const h = o.h ?? 1e-6;
    const gt = o.gradTol ?? TOL.f32Grad;
    o.inputs.forEach((s, i) => {
      if (s.dtype === 'i32' || s.grad === false) return;
      const x = rounded[i];
      const fd = new Float64Array(x.length);
      for (let j = 0; j < x.length; j++) {
        const keepV = x[j];
        x[j] = keepV + h;
        const up = o.reference(rounded);
        x[j] = keepV - h;
        const dn = o.reference(rounded);
        x[j] = keepV;
        let acc = 0;
        for (let k = 0; k < up.length; k++) acc += (up[k] - dn[k]) * wR[k];
        fd[j] = acc / (2 * h);
      }
      const g = ts[i].grad;
      t.truthy(g, `input ${i} got no gradient`);
      if (!g) return;
      const ge = relMaxError(g.toFloat32(), fd, gt.floor);
      t.true(ge < gt.rel, `grad of input ${i} relative max error ${ge.toExponential(2)} >= ${gt.rel} (${gt.why})`);
    });
    for (const x of ts) x.grad?.dispose();
  });
  }
}
