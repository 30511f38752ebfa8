// Small shared pieces for op wrappers.
import type { NativeBackend, NativeTensor } from '../../native.ts';
import { ShapeError } from '../errors.ts';
import { Tensor, sameShape } from '../tensor.ts';

export { sameShape };

/** Wraps a fresh native handle produced by backend b. */
export const wrap = (b: NativeBackend, h: NativeTensor): Tensor => new Tensor(h, b);
export const wrapOpt = (b: NativeBackend, h: NativeTensor | null): Tensor | null => (h ? new Tensor(h, b) : null);

export function assertShape(op: string, what: string, t: Tensor, shape: readonly number[]): void {
  if (!sameShape(t.shape, shape)) throw new ShapeError(`${op}: ${what} must be [${shape.join(',')}], got ${t.describe()}`, op);
}

export const prod = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** A fresh 53-bit seed from a counter-based generator owned by the caller (dropout masks). */
export function seed53(rng: () => number): number { return Math.floor(rng() * 2 ** 53); }
