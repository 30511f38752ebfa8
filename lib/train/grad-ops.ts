// Gradient-wide reductions through the backend's fused kernels (one native call over the whole list).
import type { Tensor } from '../tensor/index.ts';
import { wrap } from '../tensor/ops/util.ts';
import { NotAvailableError } from './errors.ts';
import type { GradOps } from './types.ts';

function backendOf(xs: Tensor[]) {
  const be = xs[0].backend;
  if (typeof be.sumSquares !== 'function' || typeof be.scaleInplace !== 'function') {
    throw new NotAvailableError('the optimizer kernels (sumSquares, scaleInplace) are not in this build of the addon; rebuild with `npm run build`');
  }
  return be;
}

export const nativeGradOps: GradOps = {
  readsLowPrecisionGrads: true,  // the native sums read every float dtype (bf16 -> f64 exactly)
  sumSquares(xs) { return xs.length ? backendOf(xs).sumSquares(xs.map((t) => t.handle)) : 0; },
  scaleInplace(xs, s) { if (xs.length) backendOf(xs).scaleInplace(xs.map((t) => t.handle), s); },
  stepControl(grads, losses, maxNorm) {
    const be = backendOf([...grads, ...losses]);
    return wrap(be, be.stepControl(grads.map((t) => t.handle), losses.map((t) => t.handle), maxNorm));
  },
};

/** A stepControl block's three float64 values, from its contents (i64 [3]: data() or a queued read). */
export function stepControlValues(raw: BigInt64Array): { norm: number; coefficient: number; skip: boolean } {
  const f = new Float64Array(raw.buffer, raw.byteOffset, 3);
  return { norm: f[0], coefficient: f[1], skip: f[2] !== 0 };
}

/** Disposes every .grad (PyTorch's zero_grad(set_to_none=True)). */
export function zeroGrads(params: Iterable<Tensor>): void {
  for (const p of params) if (p.grad) { p.grad.dispose(); p.grad = null; }
}

/** The factor clipping multiplies the gradients by: clip/(norm+1e-6) when that is below 1 (torch's rule), else 1. */
export function clipCoefficient(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0 && Number.isFinite(norm))) return 1;
  const coef = maxNorm / (norm + 1e-6);
  return coef < 1 ? coef : 1;
}

/** Global L2 norm before clipping; scales the gradients by clipCoefficient in place. */
export function clipGlobalNorm(ops: GradOps, grads: Tensor[], maxNorm: number): number {
  const norm = Math.sqrt(ops.sumSquares(grads));
  const coef = clipCoefficient(norm, maxNorm);
  if (coef !== 1) ops.scaleInplace(grads, coef);
  return norm;
}
