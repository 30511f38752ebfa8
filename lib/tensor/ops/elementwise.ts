// add / sub / mul / scale with suffix broadcasting, with backward rules.
import { record, needsGrad } from '../autograd.ts';
import { ShapeError } from '../errors.ts';
import { Tensor, sameBackend } from '../tensor.ts';
import { prod, sameShape, wrap } from './util.ts';

function reduceTo(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g.share();
  return wrap(g.backend, g.backend.sumRows(g.handle, [...shape]));
}

/** alpha*a + beta*b; b may be a trailing part of a's shape (bias-like broadcast). */
export function add(a: Tensor, b: Tensor, alpha = 1, beta = 1): Tensor {
  const be = sameBackend('add', a, b);
  const y = wrap(be, be.add(a.handle, b.handle, alpha, beta));
  if (needsGrad(a, b)) {
    const bShape = b.shape;
    record('add', [a, b], [y], [], ([g], _s, needs) => [
      needs[0] ? (alpha === 1 ? g!.share() : wrap(be, be.scale(g!.handle, alpha))) : null,
      needs[1] ? scaleOwned(reduceTo(g!, bShape), beta) : null,
    ]);
  }
  return y;
}

function scaleOwned(t: Tensor, s: number): Tensor {
  if (s === 1) return t;
  const r = wrap(t.backend, t.backend.scale(t.handle, s));
  t.dispose();
  return r;
}

export const sub = (a: Tensor, b: Tensor): Tensor => add(a, b, 1, -1);

/** a*b with suffix broadcasting of b. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const be = sameBackend('mul', a, b);
  const y = wrap(be, be.mul(a.handle, b.handle));
  if (needsGrad(a, b)) {
    const bShape = b.shape;
    record('mul', [a, b], [y], [a, b], ([g], [sa, sb], needs) => {
      const ga = needs[0] ? wrap(be, be.mul(g!.handle, sb.handle)) : null;
      let gb: Tensor | null = null;
      if (needs[1]) {
        const full = wrap(be, be.mul(g!.handle, sa.handle));
        gb = reduceTo(full, bShape);
        full.dispose();
      }
      return [ga, gb];
    });
  }
  return y;
}

export function scale(a: Tensor, s: number): Tensor {
  const y = wrap(a.backend, a.backend.scale(a.handle, s));
  if (needsGrad(a)) record('scale', [a], [y], [], ([g]) => [wrap(a.backend, a.backend.scale(g!.handle, s))]);
  return y;
}

/** Sum of a list of same-shape tensors (used for residual streams with several branches). */
export function addN(xs: Tensor[]): Tensor {
  if (xs.length === 0) throw new ShapeError('addN: no inputs', 'addN');
  let acc = xs[0];
  for (let i = 1; i < xs.length; i++) {
    const next = add(acc, xs[i]);
    if (i > 1) acc.dispose();
    acc = next;
  }
  return acc === xs[0] ? scale(acc, 1) : acc;
}

export { prod };
